//! Checked edits of config text. A plain `replace` whose anchor is gone (a
//! default renamed, a line reworded) silently does nothing, and the test then
//! runs a config it did not mean to; these panic instead, naming the anchor.

pub trait Edit {
    /// Every occurrence of `anchor` replaced by `with`; panics if there is none.
    fn edit(&self, anchor: &str, with: &str) -> String;
    /// The first occurrence only; panics if there is none.
    fn edit_first(&self, anchor: &str, with: &str) -> String;
}

impl Edit for str {
    #[track_caller]
    fn edit(&self, anchor: &str, with: &str) -> String {
        assert_anchor(self, anchor);
        self.replace(anchor, with)
    }

    #[track_caller]
    fn edit_first(&self, anchor: &str, with: &str) -> String {
        assert_anchor(self, anchor);
        self.replacen(anchor, with, 1)
    }
}

#[track_caller]
fn assert_anchor(text: &str, anchor: &str) {
    assert!(!anchor.is_empty() && text.contains(anchor), "edit: {anchor:?} is not in the text:\n{text}");
}
