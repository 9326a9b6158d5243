//! Object-graph introspection: `referrers`, `referents` and `dot`.
//! Each test runs on its own thread, hence with its own heap of tracked
//! objects.

use std::cell::RefCell;

use strata_gc::{collect, dot, referents, referrers, Finalize, Gc, ObjectInfo, Trace};

#[derive(Trace, Finalize, Default)]
struct Node {
    kids: RefCell<Vec<Gc<Node>>>,
    label: RefCell<Option<Gc<String>>>,
}

fn node() -> Gc<Node> {
    Gc::new(Node::default())
}

fn link(from: &Gc<Node>, to: &Gc<Node>) {
    from.kids.borrow_mut().push(to.clone());
}

fn addr<T: ?Sized>(g: &Gc<T>) -> usize {
    Gc::as_ptr(g) as *const u8 as usize
}

fn addrs(v: &[ObjectInfo]) -> Vec<usize> {
    let mut a: Vec<usize> = v.iter().map(|i| i.address).collect();
    a.sort_unstable();
    a
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

#[test]
fn referrers_of_a_shared_node_lists_both_parents() {
    let (p1, p2, child) = (node(), node(), node());
    link(&p1, &child);
    link(&p2, &child);
    link(&p2, &child); // two edges from p2: still listed once
    let r = referrers(&child);
    assert_eq!(addrs(&r), sorted(vec![addr(&p1), addr(&p2)]));
    assert!(r.iter().all(|i| i.type_name.ends_with("Node")));
    assert!(referrers(&p1).is_empty(), "locals are not referrers");
}

#[test]
fn referrers_include_self_loops_and_drop_with_the_edge() {
    let a = node();
    link(&a, &a);
    assert_eq!(addrs(&referrers(&a)), vec![addr(&a)]);
    a.kids.borrow_mut().clear();
    assert!(referrers(&a).is_empty());
}

#[test]
fn referrers_of_untracked_objects() {
    let s = Gc::new(String::from("shared"));
    let (a, b) = (node(), node());
    *a.label.borrow_mut() = Some(s.clone());
    *b.label.borrow_mut() = Some(s.clone());
    assert_eq!(addrs(&referrers(&s)), sorted(vec![addr(&a), addr(&b)]));
}

#[test]
fn referents_list_children_once_with_type_names() {
    let (a, b, c) = (node(), node(), node());
    link(&a, &b);
    link(&a, &c);
    link(&a, &b);
    let s = Gc::new(String::from("x"));
    *a.label.borrow_mut() = Some(s.clone());
    let r = referents(&a);
    assert_eq!(addrs(&r), sorted(vec![addr(&b), addr(&c), addr(&s)]));
    let names: Vec<&str> = r.iter().map(|i| i.type_name).collect();
    assert!(names.contains(&std::any::type_name::<String>()));
    assert!(referents(&b).is_empty());
    assert!(referents(&s).is_empty());
}

/// `(node lines, edge lines)` of a DOT graph.
fn shape(g: &str) -> (usize, usize) {
    (g.matches("[label=").count(), g.matches(" -> ").count())
}

#[test]
fn dot_of_a_three_cycle() {
    let (a, b, c) = (node(), node(), node());
    link(&a, &b);
    link(&b, &c);
    link(&c, &a);
    let g = dot(&a, 3);
    assert!(
        g.starts_with("digraph") && g.trim_end().ends_with('}'),
        "{g}"
    );
    assert_eq!(shape(&g), (3, 3), "{g}");
    for x in [&a, &b, &c] {
        assert!(g.contains(&format!("{:#x}", addr(x))), "{g}");
    }
    assert!(g.contains(&format!("\"{:#x}\" -> \"{:#x}\"", addr(&c), addr(&a))));
    assert!(g.contains("Node"));
    // Within one hop of `a` (either direction): b and c, and only the
    // edges between included nodes (all three here).
    assert_eq!(shape(&dot(&a, 1)), (3, 3));
    assert_eq!(shape(&dot(&a, 0)), (1, 0));
    drop((a, b, c));
    assert_eq!(collect(), 3);
}

#[test]
fn dot_shows_what_keeps_a_cycle_alive() {
    let (a, b) = (node(), node());
    link(&a, &b);
    link(&b, &a);
    let holder = node();
    link(&holder, &a);
    let far = node();
    link(&far, &holder);
    drop((a, b));
    let a = holder.kids.borrow()[0].clone();
    let g = dot(&a, 1);
    // a, b (referent and referrer) and holder (referrer); not `far`.
    assert_eq!(shape(&g), (3, 3), "{g}");
    assert!(g.contains(&format!("\"{:#x}\" -> \"{:#x}\"", addr(&holder), addr(&a))));
    assert!(!g.contains(&format!("{:#x}", addr(&far))));
    assert_eq!(shape(&dot(&a, 2)), (4, 4));
    drop((a, far, holder));
    assert_eq!(collect(), 2);
}

#[test]
fn dot_of_an_untracked_root_and_leaves() {
    let s = Gc::new(String::from("leaf"));
    let g = dot(&s, 2);
    assert_eq!(shape(&g), (1, 0), "{g}");
    assert!(g.contains("alloc::string::String"));
    let a = node();
    *a.label.borrow_mut() = Some(s.clone());
    assert_eq!(shape(&dot(&s, 1)), (2, 1));
}

/// `backrefs_dot` follows referrers only, `depth` hops back: a chain
/// r2 -> r1 -> target -> child draws r1 and r2 (depth 2) but never the
/// child, and depth 1 stops at r1. `svg` draws it without Graphviz.
#[test]
fn backrefs_follow_referrers_only_up_to_the_depth() {
    let (r2, r1, target, child) = (node(), node(), node(), node());
    link(&r2, &r1);
    link(&r1, &target);
    link(&target, &child);
    let has = |g: &str, n: &Gc<Node>| g.contains(&format!("{:#x}", addr(n)));

    let deep = strata_gc::backrefs_dot(&target, 2);
    assert!(
        has(&deep, &target) && has(&deep, &r1) && has(&deep, &r2),
        "{deep}"
    );
    assert!(!has(&deep, &child), "{deep}");
    assert_eq!(deep.matches(" -> ").count(), 2, "{deep}");

    let shallow = strata_gc::backrefs_dot(&target, 1);
    assert!(has(&shallow, &r1) && !has(&shallow, &r2), "{shallow}");

    let svg = strata_gc::svg(&deep).expect("our DOT is drawable");
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("Node").count(), 3, "one box per object:\n{svg}");
    assert!(
        xml_elements(&svg) >= 6,
        "three boxes and two edges at least:\n{svg}"
    );
    let err = strata_gc::svg("digraph { a -> ").unwrap_err();
    assert!(
        err.to_string().contains("cannot draw the DOT graph"),
        "{err}"
    );
}

/// Parses `svg` as XML (every tag closed by its own name) and returns how
/// many elements it has: the file opens in a browser, not just looks like SVG.
fn xml_elements(svg: &str) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let (mut elements, mut depth) = (0, 0i64);
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                elements += 1;
                depth += 1;
            }
            Ok(Event::Empty(_)) => elements += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    elements
}
