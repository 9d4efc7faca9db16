//! Ports and the services' ops listener.

/// A port nothing listens on, outside the ephemeral range (see
/// `platform::ports`). For an address that must refuse connections (a
/// broker or a provider that is down), or a port a child process must take.
pub fn unused_port() -> u16 {
    platform::ports::unused_port().expect("a free port")
}

/// The `/metrics` text of an ops listener on `port` (127.0.0.1).
pub async fn metrics_text(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.text().await.unwrap_or_else(|e| panic!("GET {url} body: {e}"))
}

/// The value of the series `name` whose labels include every one of
/// `labels` in a `/metrics` text (summed if several match), `None` if none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name || !wanted.iter().all(|w| series_labels.contains(w.as_str())) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn a_series_is_found_by_name_and_labels_and_summed() {
        let text = "# TYPE retries counter\nretries{group=\"a\",topic=\"x\"} 2\nretries{group=\"a\",topic=\"y\"} 1\nretries{group=\"b\"} 7\nretries_total 9\n";
        assert_eq!(metric(text, "retries", &[("group", "a")]), Some(3.0));
        assert_eq!(metric(text, "retries", &[("group", "b")]), Some(7.0));
        assert_eq!(metric(text, "retries", &[("group", "c")]), None);
        assert_eq!(metric(text, "retries_total", &[]), Some(9.0));
    }
}
