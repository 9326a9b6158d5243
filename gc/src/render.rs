//! Introspection layer, pictures: the DOT graphs of [`crate::dot`] and
//! [`crate::backrefs_dot`] drawn as SVG in Rust (feature `svg`, with the
//! `layout-rs` crate), so that objgraph's pictures open in a browser on a
//! machine without Graphviz. Imports nothing of the crate.

use std::fmt;

/// A DOT text that could not be drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderError {
    message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot draw the DOT graph: {}; strata_gc::dot and backrefs_dot always \
             give drawable text, so check any edits made to it",
            self.message
        )
    }
}

impl std::error::Error for RenderError {}

/// Draws a Graphviz DOT graph (such as [`crate::dot`] or
/// [`crate::backrefs_dot`] return) as an SVG document, laid out top to
/// bottom by `layout-rs` (a Rust port of Graphviz's `dot` layout; labels,
/// boxes and edges, no Graphviz needed).
///
/// # Errors
/// [`RenderError`] when `dot` is not valid DOT; the message says where the
/// parser stopped.
///
/// ```
/// use std::cell::RefCell;
/// use strata_gc::{Gc, Trace};
/// #[derive(Trace, Default)]
/// struct Obj(RefCell<Vec<Gc<Obj>>>);
/// let a = Gc::new(Obj::default());
/// a.0.borrow_mut().push(a.clone());
/// let svg = strata_gc::svg(&strata_gc::dot(&a, 1)).unwrap();
/// assert!(svg.contains("<svg") && svg.contains("Obj"));
/// assert!(strata_gc::svg("digraph {").is_err());
/// ```
pub fn svg(dot: &str) -> Result<String, RenderError> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};

    let graph = DotParser::new(dot)
        .process()
        .map_err(|message| RenderError { message })?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}
