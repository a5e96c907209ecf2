//! User messages: the [`Reporter`] every run takes, and helpers for their text.
//!
//! The library never prints: it hands each line to the run's reporter, which the binary connects to
//! stderr (`cli`) and tests to a buffer. One switch, `quiet`, silences every message; errors are not
//! messages (they are returned, and the binary prints them). Progress bars are separate
//! ([`crate::progress`]).

use std::sync::{Arc, Mutex};

/// Where the user messages of a run go (see the module doc).
#[derive(Clone)]
pub struct Reporter {
    quiet: bool,
    sink: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Lines go to `sink`, unless `quiet`.
    pub fn new(quiet: bool, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Reporter {
            quiet,
            sink: Arc::new(sink),
        }
    }

    /// A reporter that drops every line.
    pub fn silent() -> Self {
        Reporter::new(true, |_| {})
    }

    /// A reporter that keeps every line in the returned buffer (for tests).
    pub fn collecting() -> (Self, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let reporter = Reporter::new(false, move |l| {
            kept.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(l.to_string())
        });
        (reporter, lines)
    }

    /// Whether messages are dropped.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A line of information (what a stage did).
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            (self.sink)(line.as_ref());
        }
    }

    /// A notice: something the user should know and may want to act on (`mri-ad: notice: …`).
    pub fn notice(&self, what: impl std::fmt::Display) {
        self.say(format!("mri-ad: notice: {what}"));
    }
}

/// The first five of `items`, comma-separated, with how many more there are.
pub fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(AsRef::as_ref).collect();
    match items.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_drops_every_line_and_notices_are_prefixed() {
        let (r, lines) = Reporter::collecting();
        r.say("h0: computed");
        r.notice("mixed providers");
        assert_eq!(
            *lines.lock().unwrap(),
            ["h0: computed", "mri-ad: notice: mixed providers"]
        );
        let quiet = Reporter::new(true, |_| panic!("a quiet reporter printed"));
        quiet.say("x");
        quiet.notice("y");
        assert_eq!(
            first_few(&["a", "b", "c", "d", "e", "f", "g"]),
            "a, b, c, d, e and 2 more"
        );
    }
}
