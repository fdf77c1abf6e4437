//! `#[derive(Message)]` and its `#[message(...)]` options.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, DeriveInput, LitStr, Type};

/// The options of `#[message(...)]`.
pub(crate) struct MessageArgs {
    reply: Option<Type>,
    remote: Option<LitStr>,
}

impl MessageArgs {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut args = MessageArgs { reply: None, remote: None };
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
                } else if meta.path.is_ident("remote") {
                    if args.remote.is_some() {
                        return Err(meta.error("`remote` is given twice"));
                    }
                    let value = meta.value()?;
                    let name: LitStr = value.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`remote` takes the stable wire name, as in `remote = \"shop.Order\"`",
                        )
                    })?;
                    if name.value().is_empty() {
                        return Err(syn::Error::new(name.span(), "the wire name must not be empty"));
                    }
                    args.remote = Some(name);
                    Ok(())
                } else {
                    let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_else(|| "?".into());
                    Err(meta.error(format!(
                        "unknown `message` option `{key}`; expected `reply = Type` or `remote = \"wire.Name\"`"
                    )))
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
    let wire = args.remote.as_ref().map(|wire_name| {
        quote! {
            fn wire() -> ::core::option::Option<::footlight::Wire<Self>> {
                ::core::option::Option::Some(::footlight::__private::wire::<Self>(#wire_name))
            }
        }
    });
    quote! {
        impl #impl_generics ::footlight::Message for #name #ty_generics #where_clause {
            type Reply = #reply;
            #wire
        }
    }
}
