//! Keeping secrets and personal data out of logs (secrets and
//! tokens): URLs without their credentials, phone numbers masked, and
//! whatever looks like a bearer token (a JWT) cut out.
//!
//! Use these where a value that may carry such data is logged: a connection
//! URL, a dependency's error text (which often repeats the URL it failed
//! on), a phone number.

/// `text` with the `user:password@` part of every URL in it replaced by
/// `***@`, e.g. `postgres://app:s3cret@db:5432/x` → `postgres://***@db:5432/x`.
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | ')' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    jwts(&out)
}

/// A phone number for logs: its last two digits only (`***-**-**78`).
pub fn phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0..=4 => "***".to_string(),
        n => format!("***{}", digits[n - 2..].iter().collect::<String>()),
    }
}

/// `text` with anything shaped like a JWT (`eyJ….….…`) replaced by `<token>`.
pub fn jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("eyJ") {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(candidate.len());
        if candidate[..end].matches('.').count() >= 2 {
            out.push_str("<token>");
        } else {
            out.push_str(&candidate[..end]);
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_cut_from_urls() {
        assert_eq!(urls("postgres://app:s3cret@db:5432/x"), "postgres://***@db:5432/x");
        assert_eq!(
            urls("failed (http://u:p@10.0.0.7:8081/apis) and redis://:pw@r:6379"),
            "failed (http://***@10.0.0.7:8081/apis) and redis://***@r:6379"
        );
        assert_eq!(urls("http://127.0.0.1:8081/x?y=1"), "http://127.0.0.1:8081/x?y=1");
        assert_eq!(urls("no url here"), "no url here");
    }

    #[test]
    fn phones_keep_two_digits() {
        assert_eq!(phone("010-1234-5678"), "***78");
        assert_eq!(phone("+82 10 1234 5678"), "***78");
        assert_eq!(phone("12"), "***");
    }

    #[test]
    fn tokens_are_cut() {
        let text = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtLTEifQ.abc-_123 end";
        assert_eq!(jwts(text), "Bearer <token> end");
        assert_eq!(jwts("eyJust a word"), "eyJust a word");
    }
}
