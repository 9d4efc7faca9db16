//! The grouped admission (`ingest::admission`): the requests waiting at the
//! same moment are decided in one script call per event, each exactly as if
//! it had been a call of its own, and one event's failure is never another's.

use std::collections::HashMap;

use ingest::admission::{Admission, AdmissionError, Admitter};
use ingest::MemberId;
use platform::event_keys::EventKeys;

use crate::helpers::*;

fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("member id")
}

#[tokio::test]
async fn grouped_requests_are_each_decided_as_if_alone() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let members: Vec<String> = (0..40).map(|i| format!("m-{i}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let event_id = create_event(&mut conn, EventSpec::open(&eligible)).await;
    let admitter = Admitter::new(std::time::Duration::from_secs(30));

    // Every eligible member three times, and a stranger, all at once: they
    // land in a few grouped calls, a member's requests often in the same one.
    let mut asks = Vec::new();
    for round in 0..3 {
        for m in members.iter().chain(std::iter::once(&"stranger".to_string())) {
            let (admitter, conn, event_id) = (admitter.clone(), conn.clone(), event_id.clone());
            let entry = format!("e-{m}-{round}");
            let m = m.clone();
            asks.push(tokio::spawn(async move {
                let answer = admitter.admit_grouped(&conn, &event_id, &member(&m), &entry, true).await;
                (m, answer.expect("admitted or refused"))
            }));
        }
    }
    let mut by_member: HashMap<String, Vec<Admission>> = HashMap::new();
    for ask in asks {
        let (m, admission) = ask.await.expect("task");
        by_member.entry(m).or_default().push(admission);
    }

    assert!(by_member["stranger"].iter().all(|a| *a == Admission::NotEligible), "{:?}", by_member["stranger"]);
    for m in &members {
        let answers = &by_member[m];
        let accepted: Vec<&String> = answers
            .iter()
            .filter_map(|a| match a {
                Admission::Accept { entry_id, .. } => Some(entry_id),
                _ => None,
            })
            .collect();
        assert_eq!(accepted.len(), 1, "{m}: exactly one accepted of {answers:?}");
        for answer in answers {
            match answer {
                Admission::Accept { .. } => {}
                Admission::InProgress { entry_id, .. } => assert_eq!(entry_id, accepted[0], "{m}"),
                other => panic!("{m}: a repeat is in progress, not {other:?}"),
            }
        }
        assert_eq!(
            entered_mark(&mut conn, &event_id, m).await.map(|mark| mark.split('|').nth(1).map(str::to_string)),
            Some(Some(accepted[0].clone())),
            "{m}: the pending mark names the accepted entry"
        );
    }
}

#[tokio::test]
async fn a_failing_event_fails_its_own_requests_only() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let members: Vec<String> = (0..20).map(|i| format!("m-{i}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let healthy = create_event(&mut conn, EventSpec::open(&eligible)).await;
    let broken = create_event(&mut conn, EventSpec::open(&eligible)).await;
    // A key of the wrong type: the script errors on every request of `broken`.
    let _: () =
        redis::cmd("SET").arg(EventKeys::new(&broken).entered).arg("x").query_async(&mut conn).await.expect("SET");
    let admitter = Admitter::new(std::time::Duration::from_secs(30));

    let mut asks = Vec::new();
    for m in &members {
        for event_id in [&healthy, &broken] {
            let (admitter, conn, event_id, m) = (admitter.clone(), conn.clone(), event_id.clone(), m.clone());
            asks.push(tokio::spawn(async move {
                let answer =
                    admitter.admit_grouped(&conn, &event_id, &member(&m), &format!("e-{m}-{event_id}"), true).await;
                (event_id, answer)
            }));
        }
    }
    for ask in asks {
        let (event_id, answer) = ask.await.expect("task");
        if event_id == healthy {
            assert!(matches!(answer, Ok(Admission::Accept { .. })), "{answer:?}");
        } else {
            let error = answer.expect_err("the broken event's requests fail");
            assert!(matches!(error, AdmissionError::Grouped(_) | AdmissionError::Redis(_)), "{error:?}");
            assert!(error.to_string().contains("WRONGTYPE"), "the cause is kept: {error}");
        }
    }
}
