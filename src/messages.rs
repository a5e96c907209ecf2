//! Helpers for the text of user messages.

/// The first five of `items`, comma-separated, with how many more there are.
pub fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(AsRef::as_ref).collect();
    match items.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
