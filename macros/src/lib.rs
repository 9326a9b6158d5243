//! `#[strata_alloc::profile]`: `memory_profiler`'s `@profile` for Rust.
//! Use it through strata-alloc (`strata_alloc::profile`), which re-exports
//! it; its `line-profile` feature turns this crate's `enabled` on.
//!
//! Enabled, the attribute puts a probe (`strata_alloc::profile::lines`) at
//! the top of the function and a `hit(i)` before each of its statements,
//! the statements of nested blocks (`if`, `else`, `for`, `while`, `loop`,
//! `match` arm blocks, plain and `unsafe` blocks) and the tail expression
//! included. Closures, `async` blocks, nested items and macro arguments
//! are left alone: they may run after the call, or elsewhere. A static
//! beside the probe holds the function's name, `file!()`, and each
//! statement's `line!()` (spanned to the statement, so it is its line) and
//! its text, rendered from its tokens (stable Rust gives a macro no
//! statement's source text; the report shows the source line instead when
//! it can read the file).
//!
//! Not enabled, the attribute gives the function back unchanged: no probe,
//! no counting, no cost, and this crate builds without syn and quote.
//! Arguments are refused either way, so that turning the feature on or off
//! never changes whether a program compiles.

use proc_macro::TokenStream;
use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenTree};

type Tokens = proc_macro2::TokenStream;

/// Profiles the function line by line; see `strata_alloc::profile::lines`.
#[proc_macro_attribute]
pub fn profile(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into()).into()
}

/// The attribute's expansion, on `proc_macro2` tokens so that unit tests
/// can call it.
fn expand(attr: Tokens, item: Tokens) -> Tokens {
    if let Some(first) = attr.into_iter().next() {
        return with_error(
            first.span(),
            "#[strata_alloc::profile] takes no arguments: write `#[strata_alloc::profile]`",
            item,
        );
    }
    #[cfg(feature = "enabled")]
    {
        instrument::expand(item)
    }
    #[cfg(not(feature = "enabled"))]
    {
        item
    }
}

/// `item` preceded by `compile_error!(message)` at `span` (the item is
/// kept, so that its uses do not report errors of their own).
fn with_error(span: Span, message: &str, item: Tokens) -> Tokens {
    let mut bang = Punct::new('!', Spacing::Alone);
    bang.set_span(span);
    let mut semi = Punct::new(';', Spacing::Alone);
    semi.set_span(span);
    let mut text = Literal::string(message);
    text.set_span(span);
    let mut args = Group::new(Delimiter::Parenthesis, TokenTree::Literal(text).into());
    args.set_span(span);
    let error: Tokens = [
        TokenTree::Ident(Ident::new("compile_error", span)),
        TokenTree::Punct(bang),
        TokenTree::Group(args),
        TokenTree::Punct(semi),
    ]
    .into_iter()
    .collect();
    error.into_iter().chain(item).collect()
}

#[cfg(feature = "enabled")]
mod instrument {
    use super::{with_error, Tokens};
    use proc_macro2::{Delimiter, Ident, Literal, Span, TokenTree};
    use quote::{quote, quote_spanned, ToTokens};
    use syn::visit_mut::{self, VisitMut};

    /// The longest statement text kept (longer ones end in "...").
    const MAX_TEXT: usize = 72;

    pub(crate) fn expand(item: Tokens) -> Tokens {
        let mut f: syn::ItemFn = match syn::parse2(item.clone()) {
            Ok(f) => f,
            Err(_) => {
                let span = item
                    .clone()
                    .into_iter()
                    .next()
                    .map_or(Span::call_site(), |t| t.span());
                return with_error(
                    span,
                    "#[strata_alloc::profile] goes on a function with a body (a free fn, \
                     a method, a trait method's default body); remove it from this item",
                    item,
                );
            }
        };
        if let Some(c) = f.sig.constness {
            return with_error(
                c.span,
                "#[strata_alloc::profile] cannot profile a `const fn` (the probe is not \
                 const): remove `const` or the attribute",
                item,
            );
        }
        let mut walker = Walker {
            stmts: Vec::new(),
            probe: Ident::new("__strata_probe", Span::mixed_site()),
        };
        walker.block(&mut f.block);

        let lines = crate_path();
        let entries = walker.stmts.iter().map(|(span, text)| {
            let line = quote_spanned!(*span=> line!());
            quote!(#lines::__Stmt { line: #line, text: #text })
        });
        let name = f.sig.ident.to_string();
        let fn_line = quote_spanned!(f.sig.ident.span()=> line!());
        let probe = &walker.probe;
        let mutable = (!walker.stmts.is_empty()).then(|| quote!(mut));
        let stmts = std::mem::take(&mut f.block.stmts);
        f.block.stmts = syn::parse_quote! {
            // Its `line!()`s are spanned to the user's statements; clippy
            // would lint the expanded numbers as the user's literals.
            #[allow(clippy::all)]
            static __STRATA_PROFILE_META: #lines::__Meta = #lines::__Meta {
                function: #name,
                module: module_path!(),
                file: file!(),
                manifest_dir: option_env!("CARGO_MANIFEST_DIR"),
                line: #fn_line,
                stmts: &[#(#entries),*],
            };
            let #mutable #probe = #lines::__Probe::enter(&__STRATA_PROFILE_META);
            #(#stmts)*
        };
        f.into_token_stream()
    }

    fn crate_path() -> Tokens {
        quote!(::strata_alloc::profile::lines)
    }

    /// Numbers the statements it instruments, in source order.
    struct Walker {
        /// Each instrumented statement's first token's span and its text.
        stmts: Vec<(Span, String)>,
        probe: Ident,
    }

    impl Walker {
        fn block(&mut self, block: &mut syn::Block) {
            for mut stmt in std::mem::take(&mut block.stmts) {
                if matches!(stmt, syn::Stmt::Item(_)) {
                    block.stmts.push(stmt);
                    continue;
                }
                let tokens = stmt.to_token_stream();
                let span = tokens
                    .clone()
                    .into_iter()
                    .next()
                    .map_or(Span::call_site(), |t| t.span());
                let index = self.stmts.len();
                self.stmts.push((span, text(tokens)));
                self.visit_stmt_mut(&mut stmt);
                let probe = &self.probe;
                let index = Literal::usize_unsuffixed(index);
                block.stmts.push(syn::parse_quote!(#probe.hit(#index);));
                block.stmts.push(stmt);
            }
        }
    }

    /// Reaches the blocks of control flow; stops where code may run later,
    /// elsewhere, or in a const context.
    impl VisitMut for Walker {
        fn visit_block_mut(&mut self, block: &mut syn::Block) {
            self.block(block);
        }
        fn visit_expr_closure_mut(&mut self, _: &mut syn::ExprClosure) {}
        fn visit_expr_async_mut(&mut self, _: &mut syn::ExprAsync) {}
        fn visit_expr_const_mut(&mut self, _: &mut syn::ExprConst) {}
        fn visit_item_mut(&mut self, _: &mut syn::Item) {}
        fn visit_macro_mut(&mut self, _: &mut syn::Macro) {}
        fn visit_type_mut(&mut self, _: &mut syn::Type) {}
        fn visit_generic_argument_mut(&mut self, _: &mut syn::GenericArgument) {}
        fn visit_pat_mut(&mut self, _: &mut syn::Pat) {}
        fn visit_expr_repeat_mut(&mut self, e: &mut syn::ExprRepeat) {
            // The length is a const context.
            visit_mut::visit_expr_mut(self, &mut e.expr);
        }
    }

    /// A statement's text from its tokens, spaced roughly as rustfmt
    /// would; braced groups shown as `{ ... }`.
    pub(crate) fn text(tokens: Tokens) -> String {
        let mut out = String::new();
        render(tokens, &mut out);
        if out.chars().count() > MAX_TEXT {
            out = out.chars().take(MAX_TEXT - 3).collect::<String>() + "...";
        }
        out
    }

    /// What the last token written was, for spacing.
    #[derive(Clone, Copy, PartialEq)]
    enum Last {
        Start,
        Word,
        Keyword,
        Close,
        /// An operator after which no space goes (`.`, `::`, `&`, `!`, `#`, `'`).
        Glue,
        /// Any other operator.
        Op,
    }

    const KEYWORDS: &[&str] = &[
        "as", "else", "for", "if", "in", "let", "loop", "match", "move", "mut", "ref", "return",
        "while", "break", "continue", "unsafe", "where", "impl", "dyn",
    ];

    /// Operators of more than one punct.
    const OPERATORS: &[&str] = &[
        "::", "..", "..=", "...", "->", "=>", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=",
        "/=", "%=", "^=", "&=", "|=", "<<", ">>", "<<=", ">>=",
    ];

    fn render(tokens: Tokens, out: &mut String) {
        let mut last = Last::Start;
        let mut generics = 0usize;
        let mut closure_params = false;
        let mut tokens = tokens.into_iter().peekable();
        while let Some(tt) = tokens.next() {
            match tt {
                TokenTree::Ident(ident) => {
                    if !matches!(last, Last::Start | Last::Glue) {
                        out.push(' ');
                    }
                    let word = ident.to_string();
                    last = if KEYWORDS.contains(&word.as_str()) {
                        Last::Keyword
                    } else {
                        Last::Word
                    };
                    out.push_str(&word);
                }
                TokenTree::Literal(lit) => {
                    if !matches!(last, Last::Start | Last::Glue) {
                        out.push(' ');
                    }
                    out.push_str(&lit.to_string());
                    last = Last::Word;
                }
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::None => ("", ""),
                    };
                    let call = matches!(last, Last::Word | Last::Close)
                        && group.delimiter() != Delimiter::Brace;
                    if !matches!(last, Last::Start | Last::Glue) && !call {
                        out.push(' ');
                    }
                    if group.delimiter() == Delimiter::Brace {
                        let empty = group.stream().is_empty();
                        out.push_str(if empty { "{}" } else { "{ ... }" });
                    } else {
                        out.push_str(open);
                        render(group.stream(), out);
                        out.push_str(close);
                    }
                    last = Last::Close;
                }
                TokenTree::Punct(first) => {
                    // One operator: joint puncts and the one ending them.
                    let mut op = first.as_char().to_string();
                    let mut spacing = first.spacing();
                    while spacing == proc_macro2::Spacing::Joint && op != "'" {
                        match tokens.peek() {
                            Some(TokenTree::Punct(p))
                                if OPERATORS.iter().any(|o| {
                                    o.starts_with(&op) && o[op.len()..].starts_with(p.as_char())
                                }) =>
                            {
                                op.push(p.as_char());
                                spacing = p.spacing();
                                tokens.next();
                            }
                            _ => break,
                        }
                    }
                    let params_open = op == "|"
                        && !closure_params
                        && matches!(last, Last::Start | Last::Op | Last::Keyword);
                    let params_close = op == "|" && closure_params;
                    if params_open || params_close {
                        closure_params = params_open;
                    }
                    let generic_open = op == "<" && matches!(last, Last::Word | Last::Glue);
                    let generic_close = generics > 0 && op.chars().all(|c| c == '>');
                    let tight_before = matches!(
                        op.as_str(),
                        "," | ";" | ":" | "." | "::" | ".." | "..=" | "?"
                    ) || generic_open
                        || generic_close
                        || params_close
                        || (op == "!" && last == Last::Word);
                    if !tight_before && !matches!(last, Last::Start | Last::Glue) {
                        out.push(' ');
                    }
                    out.push_str(&op);
                    if generic_open {
                        generics += 1;
                    } else if generic_close {
                        generics = generics.saturating_sub(op.len());
                    }
                    last = if generic_close {
                        Last::Close
                    } else if generic_open
                        || params_open
                        || matches!(
                            op.as_str(),
                            "." | "::" | ".." | "..=" | "&" | "!" | "#" | "'"
                        )
                        || (op == "-" && matches!(last, Last::Start | Last::Op | Last::Keyword))
                    {
                        Last::Glue
                    } else {
                        Last::Op
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn tokens(text: &str) -> Tokens {
        Tokens::from_str(text).unwrap()
    }

    #[test]
    fn arguments_are_refused() {
        let out = expand(tokens("lines"), tokens("fn f() {}")).to_string();
        assert!(out.starts_with("compile_error"), "{out}");
        assert!(
            out.contains("takes no arguments") && out.ends_with("fn f () { }"),
            "{out}"
        );
    }

    /// Off, the attribute is the identity: the function comes back token
    /// for token, with no probe and so no counting.
    #[cfg(not(feature = "enabled"))]
    #[test]
    fn disabled_expansion_is_the_identity() {
        let items = [
            "fn f() -> usize { let v = vec![0u8; 10]; v.len() }",
            "pub async fn g<T: Clone>(&self, x: T) -> T { for _ in 0..3 { x.clone(); } x }",
            "fn h() {}",
        ];
        for item in items {
            let out = expand(Tokens::new(), tokens(item));
            assert_eq!(out.to_string(), tokens(item).to_string());
            assert!(!out.to_string().contains("strata"), "{out}");
        }
    }

    #[cfg(feature = "enabled")]
    #[test]
    fn enabled_expansion_has_a_probe_and_a_hit_per_statement() {
        let item = "fn f(k: usize) -> usize { let mut v = Vec::new(); \
                    for i in 0..k { v.push(i); if i > 2 { v.pop(); } } \
                    let g = || { 1 + 1 }; v.len() + g() }";
        let out = expand(Tokens::new(), tokens(item)).to_string();
        assert!(out.contains("__Probe :: enter"), "{out}");
        // let, for, push, if, pop, let g, tail: 7 statements; the
        // closure's body is not instrumented.
        assert_eq!(out.matches(". hit (").count(), 7, "{out}");
        assert!(out.contains("hit (6)") && !out.contains("hit (7)"), "{out}");
    }

    #[cfg(feature = "enabled")]
    #[test]
    fn statement_text_is_spaced_like_source() {
        let cases = [
            ("let v = vec![0u8; 1 << 20];", "let v = vec![0u8; 1 << 20];"),
            ("for i in 0..k { v.push(i); }", "for i in 0..k { ... }"),
            (
                "let words: Vec<String> = (0..n).map(|i| format!(\"w{i}\")).collect();",
                "let words: Vec<String> = (0..n).map(|i| format!(\"w{i}\")).collect();",
            ),
            ("total += x.len()?;", "total += x.len()?;"),
            ("let y = &mut a[-1 + b];", "let y = &mut a[-1 + b];"),
            ("if !done && a != b { }", "if !done && a != b {}"),
            (
                "let m: HashMap<u64, Vec<u8>> = HashMap::new();",
                "let m: HashMap<u64, Vec<u8>> = HashMap::new();",
            ),
        ];
        for (source, want) in cases {
            assert_eq!(instrument::text(tokens(source)), want, "{source}");
        }
    }

    #[cfg(feature = "enabled")]
    #[test]
    fn misuse_is_reported() {
        let out = expand(Tokens::new(), tokens("struct S;")).to_string();
        assert!(out.contains("goes on a function with a body"), "{out}");
        let out = expand(Tokens::new(), tokens("const fn f() -> u8 { 1 }")).to_string();
        assert!(out.contains("cannot profile a `const fn`"), "{out}");
    }
}
