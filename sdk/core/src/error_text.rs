//! How the driver and the tracker render an error for people: the error and its causes on
//! one line, `outer: inner: innermost`. HTTP and TLS clients name only the outermost part
//! (the URL); the causes say whether it was refused, timed out, or which check failed.

/// `e` and each of its sources, joined by `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("request to https://t.example failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_named_in_order() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            super::chain(&e),
            "request to https://t.example failed: connection refused"
        );
    }
}
