//! `#[derive(Message)]` and its `#[message(...)]` options.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, DeriveInput, Type};

/// The options of `#[message(...)]`.
pub(crate) struct MessageArgs {
    reply: Option<Type>,
}

impl MessageArgs {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut args = MessageArgs { reply: None };
        for attr in attrs.iter().filter(|a| a.path().is_ident("message")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("reply") {
                    if args.reply.is_some() {
                        return Err(meta.error("`reply` is given twice"));
                    }
                    let value = meta.value()?;
                    let ty: Type = value.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`reply` takes a type, as in `#[message(reply = u64)]`")
                    })?;
                    args.reply = Some(ty);
                    Ok(())
                } else {
                    let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_else(|| "?".into());
                    Err(meta.error(format!("unknown `message` option `{key}`; expected `reply = Type`")))
                }
            })?;
        }
        Ok(args)
    }
}

pub(crate) fn expand(input: &DeriveInput, args: &MessageArgs) -> TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let reply = match &args.reply {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    };
    quote! {
        impl #impl_generics ::footlight::Message for #name #ty_generics #where_clause {
            type Reply = #reply;
        }
    }
}
