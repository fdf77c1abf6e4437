//! Derive macros for Footlight. Use them through the `footlight` crate:
//!
//! ```ignore
//! use footlight::prelude::*;
//!
//! #[derive(Actor)]
//! struct Counter { n: u64 }
//!
//! #[derive(Message)]
//! #[message(reply = u64)]
//! struct Add(u64);
//! ```
//!
//! Generated code names everything through `::footlight`, so the facade crate
//! must be a dependency of the crate using the derives.

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod actor;
mod message;

/// Implements `footlight::Actor` with every hook left at its default.
///
/// Write `impl Actor for T { ... }` by hand instead to override hooks such as
/// `started` or `on_failure`.
#[proc_macro_derive(Actor)]
pub fn derive_actor(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    actor::expand(&input).into()
}

/// Implements `footlight::Message`.
///
/// The reply type is set with `#[message(reply = T)]` and defaults to `()`.
/// `#[message(remote = "wire.Name")]` lets the message cross nodes under that
/// stable name; the message and its reply must then implement serde's
/// `Serialize` and `Deserialize` (a compile error says so otherwise).
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match message::MessageArgs::from_attrs(&input.attrs) {
        Ok(args) => message::expand(&input, &args).into(),
        Err(err) => err.to_compile_error().into(),
    }
}
