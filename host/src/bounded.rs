//! Text from outside (a policy's errors, reasons and logs, an API error) made fit for a log
//! line, a status or an Event: at most a number of bytes, cut on a character boundary, with
//! control characters (newlines that would forge log lines, terminal escapes) replaced.

/// `s` in at most `max` bytes (an ellipsis marks a cut), control characters as `�`.
pub fn bounded(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if out.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("fits", 10), "fits");
        let cut = bounded(&"é".repeat(100), 21);
        assert!(cut.len() <= 21, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("exactly ten", 11), "exactly ten");
    }

    #[test]
    fn control_characters_cannot_forge_a_log_line() {
        let s = bounded("ok\nlevel=ERROR forged\x1b[31m", 100);
        assert!(!s.contains('\n') && !s.contains('\x1b'), "{s:?}");
        assert!(s.starts_with("ok\u{fffd}level=ERROR"));
    }
}
