//! Progress bars (indicatif) that hide themselves when stderr is not a terminal or when asked to.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Factory for progress bars; `hidden` ones draw nothing.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Visible only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Progress {
            visible: enabled && std::io::stderr().is_terminal(),
        }
    }
    /// Never draws.
    pub fn hidden() -> Self {
        Progress { visible: false }
    }
    /// A bar counting `len` units of work, labelled `what`.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>14} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
            )
            .expect("static template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    }
}
