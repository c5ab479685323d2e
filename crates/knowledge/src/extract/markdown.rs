//! Markdown to plain text with pulldown-cmark: the words stay, the markup goes.
//! Raw HTML inside Markdown is dropped (it may hold scripts); link and image
//! targets are dropped, their text and alt text kept.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

pub(crate) fn to_text(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut out = String::with_capacity(markdown.len());
    let mut in_cell_row = false;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => out.push_str(&t),
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::Start(Tag::Item) => out.push_str("- "),
            Event::Start(Tag::TableCell) => {
                if in_cell_row {
                    out.push_str(" | ");
                }
                in_cell_row = true;
            }
            Event::End(TagEnd::TableRow | TagEnd::TableHead) => {
                in_cell_row = false;
                out.push('\n');
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::List(_)
                | TagEnd::Table
                | TagEnd::FootnoteDefinition,
            ) => out.push_str("\n\n"),
            Event::End(TagEnd::Item) => out.push('\n'),
            Event::Rule => out.push_str("\n\n"),
            Event::TaskListMarker(done) => out.push_str(if done { "[x] " } else { "[ ] " }),
            _ => {}
        }
    }
    out
}
