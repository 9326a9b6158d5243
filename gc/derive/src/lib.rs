//! `#[derive(Trace)]` and `#[derive(Finalize)]` for strata-gc.
//!
//! `#[derive(Trace)]` alone is enough for a type without a finalizer: it
//! also implements `Finalize` as a no-op (`NEEDS_FINALIZE = false`, so the
//! collector skips the finalization pass for the type). A type with a
//! hand-written `impl Finalize` is marked `#[trace(finalize)]`, and the
//! derive then leaves `Finalize` to that impl. `#[derive(Finalize)]`
//! expands to nothing: it is kept so that `#[derive(Trace, Finalize)]`,
//! the form of rust-gc and rust-cc, compiles unchanged (one derive cannot
//! see the other, so only one of them may emit the impl).
//!
//! `#[derive(Trace)]` visits every field (of every enum variant) except those
//! marked `#[trace(skip)]` and those of a variant marked `#[trace(skip)]`
//! (`#[trace(skip)] Cached(Vec<u8>)`), adds a `T: Trace` bound for each type parameter
//! used by a traced field, and computes `MAY_CONTAIN_GC` as the OR of the
//! traced fields' constants. A field whose type names the type itself (e.g.
//! `Vec<Self>`, `Box<Tree>`) counts as "may contain a Gc" so the constant has
//! no cycle; for mutually recursive types add `#[trace(tracked)]` on the type.
//!
//! `INTERIOR_MUTABLE` is the OR of the traced fields' constants. In a field
//! that names the type itself, the type is replaced by a placeholder that is
//! not interior-mutable: `Box<Self>` then adds nothing (the least fixed
//! point of `X = fields || X`) and the constant has no cycle. A field type
//! that is only named through `Gc<Self>` needs no placeholder at all, since
//! `Gc<U>` does not look at `U`. `#[trace(tracked)]` sets it to `true`.
//!
//! Skipping a field (or a variant) that does hold a `Gc` is safe: the
//! collector then sees that `Gc` as an outside reference and never frees
//! its target, so a cycle through it leaks. That is why the derive itself
//! is safe to use. Skipped fields and variants add no bounds and count for
//! neither constant.
//!
//! The options, by place: `skip` on a field or a variant; `tracked` and
//! `finalize` (see above) on the type. Any other option is an error.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{parse_macro_input, Data, DeriveInput, Fields, Ident, Type};

/// Derives `strata_gc::Trace`. See the crate docs.
#[proc_macro_derive(Trace, attributes(trace))]
pub fn derive_trace(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand_trace(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Expands to nothing: `#[derive(Trace)]` already implements an empty
/// `Finalize`. Kept so that `#[derive(Trace, Finalize)]` (rust-gc's and
/// rust-cc's form) compiles unchanged; a type with a hand-written `Trace`
/// impl writes `impl Finalize for T { const NEEDS_FINALIZE: bool = false; }`.
#[proc_macro_derive(Finalize)]
pub fn derive_finalize(input: TokenStream) -> TokenStream {
    // Still parsed, so that the derive rejects what is not an item.
    let _ = parse_macro_input!(input as DeriveInput);
    TokenStream::new()
}

/// Options of the `#[trace(...)]` attribute.
#[derive(Default)]
struct TraceAttr {
    /// `#[trace(skip)]` on a field or variant: not traced.
    skip: bool,
    /// `#[trace(tracked)]` on the type: always tracked.
    tracked: bool,
    /// `#[trace(finalize)]` on the type: it implements `Finalize` by hand.
    finalize: bool,
}

/// Where a `#[trace(...)]` attribute sits; each place has its own options.
#[derive(Clone, Copy)]
enum Place {
    Container,
    Variant,
    Field,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Container => "a type",
            Place::Variant => "an enum variant",
            Place::Field => "a field",
        }
    }

    fn accepted(self) -> &'static [&'static str] {
        match self {
            Place::Container => &["tracked", "finalize"],
            Place::Variant | Place::Field => &["skip"],
        }
    }
}

/// Parses every `#[trace(...)]` of `attrs`, rejecting an option unknown at
/// `place` with an error that names it and the accepted ones (an ignored
/// typo such as `#[trace(skp)]` would silently trace or leak).
fn parse_attrs(attrs: &[syn::Attribute], place: Place) -> syn::Result<TraceAttr> {
    let mut out = TraceAttr::default();
    for attr in attrs {
        if !attr.path().is_ident("trace") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .get_ident()
                .map(Ident::to_string)
                .unwrap_or_default();
            let flag = match (place, name.as_str()) {
                (Place::Field | Place::Variant, "skip") => &mut out.skip,
                (Place::Container, "tracked") => &mut out.tracked,
                (Place::Container, "finalize") => &mut out.finalize,
                _ => {
                    let path = &meta.path;
                    let shown = quote!(#path).to_string().replace(' ', "");
                    let accepted: Vec<String> = place
                        .accepted()
                        .iter()
                        .map(|o| format!("`#[trace({o})]`"))
                        .collect();
                    return Err(meta.error(format!(
                        "unknown option `{shown}` of `#[trace]` on {}: expected {}",
                        place.name(),
                        accepted.join(" or ")
                    )));
                }
            };
            *flag = true;
            Ok(())
        })?;
    }
    Ok(out)
}

/// Does `ty` mention one of `idents` (as a path segment)?
struct Mentions<'a> {
    idents: &'a [Ident],
    found: bool,
}

impl<'ast> Visit<'ast> for Mentions<'_> {
    fn visit_path_segment(&mut self, seg: &'ast syn::PathSegment) {
        if self.idents.contains(&seg.ident) {
            self.found = true;
        }
        syn::visit::visit_path_segment(self, seg);
    }
}

/// Replaces every plain path naming one of `idents` (`Tree`, `Tree<T>`,
/// `Self`) by the not-interior-mutable placeholder type.
struct ReplaceSelf<'a> {
    idents: &'a [Ident],
}

impl VisitMut for ReplaceSelf<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(p) = ty {
            if p.qself.is_none()
                && p.path.leading_colon.is_none()
                && p.path.segments.len() == 1
                && self.idents.contains(&p.path.segments[0].ident)
            {
                *ty = syn::parse_quote!(::strata_gc::__private::SelfPlaceholder);
                return;
            }
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

fn mentions(ty: &Type, idents: &[Ident]) -> bool {
    let mut m = Mentions {
        idents,
        found: false,
    };
    m.visit_type(ty);
    m.found
}

struct TracedField {
    ty: Type,
}

fn expand_trace(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let container = parse_attrs(&input.attrs, Place::Container)?;
    let mut traced: Vec<TracedField> = Vec::new();

    // One match arm per variant (a struct is a single arm).
    let mut arms = Vec::new();
    // `skip_all`: a variant marked `#[trace(skip)]`, none of whose fields
    // is traced (their attributes are still checked).
    let collect_fields = |fields: &Fields,
                          path: TokenStream2,
                          skip_all: bool,
                          traced: &mut Vec<TracedField>|
     -> syn::Result<TokenStream2> {
        let mut calls = Vec::new();
        let mut pattern_fields = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let attr = parse_attrs(&f.attrs, Place::Field)?;
            let bind = format_ident!("__field_{}", i);
            let member = match &f.ident {
                Some(id) => quote!(#id),
                None => {
                    let idx = syn::Index::from(i);
                    quote!(#idx)
                }
            };
            if attr.skip || skip_all {
                continue;
            }
            pattern_fields.push(quote!(#member: #bind));
            calls.push(quote!(::strata_gc::Trace::trace(#bind, __visitor);));
            traced.push(TracedField { ty: f.ty.clone() });
        }
        Ok(quote! {
            #path { #(#pattern_fields,)* .. } => { #(#calls)* }
        })
    };

    match &input.data {
        Data::Struct(s) => {
            arms.push(collect_fields(&s.fields, quote!(Self), false, &mut traced)?);
        }
        Data::Enum(e) => {
            for v in &e.variants {
                let vname = &v.ident;
                let attr = parse_attrs(&v.attrs, Place::Variant)?;
                arms.push(collect_fields(
                    &v.fields,
                    quote!(Self::#vname),
                    attr.skip,
                    &mut traced,
                )?);
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "Trace cannot be derived for unions: the active field is unknown; \
                 implement `unsafe impl Trace` by hand",
            ));
        }
    }

    // MAY_CONTAIN_GC: OR over traced fields; self-referential fields count as
    // `true` to keep the constant free of cycles.
    let self_idents = [name.clone(), Ident::new("Self", Span::call_site())];
    let may_terms: Vec<TokenStream2> = traced
        .iter()
        .map(|f| {
            let ty = &f.ty;
            if mentions(ty, &self_idents) {
                quote!(true)
            } else {
                quote!(<#ty as ::strata_gc::Trace>::MAY_CONTAIN_GC)
            }
        })
        .collect();
    let may = if container.tracked {
        quote!(true)
    } else {
        quote!(false #(|| #may_terms)*)
    };

    // INTERIOR_MUTABLE: OR over traced fields, the type itself replaced by a
    // placeholder in self-referential fields (see the crate docs).
    let im_terms: Vec<TokenStream2> = traced
        .iter()
        .map(|f| {
            let mut ty = f.ty.clone();
            if mentions(&ty, &self_idents) {
                ReplaceSelf {
                    idents: &self_idents,
                }
                .visit_type_mut(&mut ty);
            }
            quote!(<#ty as ::strata_gc::Trace>::INTERIOR_MUTABLE)
        })
        .collect();
    let im = if container.tracked {
        quote!(true)
    } else {
        quote!(false #(|| #im_terms)*)
    };

    // Bounds: `P: Trace` for each type parameter used by a traced field.
    let mut generics = input.generics.clone();
    let params: Vec<Ident> = generics.type_params().map(|p| p.ident.clone()).collect();
    {
        let where_clause = generics.make_where_clause();
        for p in &params {
            let used = traced
                .iter()
                .any(|f| mentions(&f.ty, std::slice::from_ref(p)));
            if used {
                where_clause
                    .predicates
                    .push(syn::parse_quote!(#p: ::strata_gc::Trace));
            }
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    // The no-op `Finalize` keeps the type's own generics and bounds only:
    // it holds for every instance, whether or not its fields are `Trace`.
    let finalize = if container.finalize {
        quote!()
    } else {
        let (f_impl, f_ty, f_where) = input.generics.split_for_impl();
        quote! {
            #[automatically_derived]
            impl #f_impl ::strata_gc::Finalize for #name #f_ty #f_where {
                const NEEDS_FINALIZE: bool = false;
            }
        }
    };

    let body = if arms.is_empty() {
        // Empty enum: no value exists.
        quote!(match *self {})
    } else {
        quote! {
            #[allow(unused_variables)]
            match self { #(#arms)* }
        }
    };

    // `trace` is `inline(always)`: `Gc::new` traces every new value of a
    // non-interior-mutable type to decide whether to track it, and an
    // out-of-line call there cost 3-7 % of building an immutable tree.
    Ok(quote! {
        #finalize

        // SAFETY: generated: visits each traced field exactly once; fields
        // marked `#[trace(skip)]` are not visited (which can only leak).
        #[automatically_derived]
        unsafe impl #impl_generics ::strata_gc::Trace for #name #ty_generics #where_clause {
            const MAY_CONTAIN_GC: bool = #may;
            const INTERIOR_MUTABLE: bool = #im;
            #[inline(always)]
            fn trace(&self, __visitor: &mut ::strata_gc::Visitor) {
                #body
            }
        }
    })
}
