//! Attribute macros of `weir-plugin`. Each turns a plain function into the export of a Weir
//! plugin world; `weir-plugin` holds the bindings and the per-record loops they call.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, ItemFn};

/// `#[transform] fn f(record: Record) -> Result<Vec<Output>, Error>`,
/// `#[transform(batch)] fn f(records: Vec<Record>) -> Vec<Result<Vec<Output>, Error>>`, or
/// `#[transform(borrowed)] fn f(record: RecordRef<'_>, out: &mut Emitter<'_>) -> Result<(), Error>`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let runner = match attr.to_string().trim() {
        "" => quote!(run_transform),
        "batch" => quote!(run_transform_batch),
        "borrowed" => quote!(run_transform_borrowed),
        other => {
            let message = format!(
                "unknown transform option {other:?}; use #[transform], #[transform(batch)] or #[transform(borrowed)]"
            );
            return syn::Error::new(proc_macro2::Span::call_site(), message).to_compile_error().into();
        }
    };
    let export = quote! {
        impl ::weir_plugin::__private::TransformGuest for Export {
            fn transform(
                topic: ::std::string::String,
                partition: u32,
                buffer: ::std::vec::Vec<u8>,
                offsets: ::std::vec::Vec<i64>,
                timestamps: ::std::vec::Vec<i64>,
                records: ::std::vec::Vec<u32>,
                headers: ::std::vec::Vec<u32>,
            ) -> ::weir_plugin::__private::PackedOutputBatch {
                let input = ::weir_plugin::__private::PackedInput {
                    topic, partition, buffer, offsets, timestamps, records, headers,
                };
                ::weir_plugin::__private::#runner(input, super::#name)
            }
        }
        ::weir_plugin::__private::transform::__export_transform!(Export);
    };
    exported(&function, "transform", export)
}

/// `#[partitioner] fn f(record: &Record, partition_count: u32) -> Result<u32, Error>`.
#[proc_macro_attribute]
pub fn partitioner(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let export = quote! {
        impl ::weir_plugin::__private::PartitionerGuest for Export {
            fn partition(batch: ::weir_plugin::__private::InputBatch, partition_count: u32) -> ::std::vec::Vec<u32> {
                ::weir_plugin::__private::run_partitioner(batch, partition_count, super::#name)
            }
        }
        ::weir_plugin::__private::partitioner::__export_partitioner!(Export);
    };
    exported(&function, "partitioner", export)
}

/// `#[validator] fn f(record: &Record) -> Result<(), Error>`; the error is the rejection reason.
#[proc_macro_attribute]
pub fn validator(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let export = quote! {
        impl ::weir_plugin::__private::ValidatorGuest for Export {
            fn validate(batch: ::weir_plugin::__private::InputBatch) -> ::std::vec::Vec<::std::option::Option<::std::string::String>> {
                ::weir_plugin::__private::run_validator(batch, super::#name)
            }
        }
        ::weir_plugin::__private::validator::__export_validator!(Export);
    };
    exported(&function, "validator", export)
}

/// `#[source] fn f(position: Option<Vec<u8>>, max_records: u32) -> Result<Polled, Error>`.
#[proc_macro_attribute]
pub fn source(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let export = quote! {
        impl ::weir_plugin::__private::SourceGuest for Export {
            fn poll(
                position: ::std::option::Option<::std::vec::Vec<u8>>,
                max_records: u32,
            ) -> ::std::result::Result<::weir_plugin::__private::SourceBatch, ::std::string::String> {
                ::weir_plugin::__private::run_source(position, max_records, super::#name)
            }
        }
        ::weir_plugin::__private::source::__export_source!(Export);
    };
    exported(&function, "source", export)
}

/// `#[sink] fn f(records: Vec<Record>) -> Result<Vec<Result<(), Error>>, Error>`: one verdict
/// per record (an `Err` sends that record to the dead-letter topic), or an `Err` for the whole
/// batch, which the broker retries with backoff.
#[proc_macro_attribute]
pub fn sink(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let export = quote! {
        impl ::weir_plugin::__private::SinkGuest for Export {
            fn write(
                batch: ::weir_plugin::__private::InputBatch,
            ) -> ::std::result::Result<::std::vec::Vec<::std::option::Option<::std::string::String>>, ::std::string::String> {
                ::weir_plugin::__private::run_sink(batch, super::#name)
            }
        }
        ::weir_plugin::__private::sink::__export_sink!(Export);
    };
    exported(&function, "sink", export)
}

/// The function as written, and a module that exports it when built for Wasm: a host build
/// (the plugin's unit tests) has no component to export.
fn exported(function: &ItemFn, kind: &str, export: Tokens) -> TokenStream {
    let module = format_ident!("__weir_{kind}_export");
    quote! {
        #[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
        #function
        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        mod #module {
            struct Export;
            #export
        }
    }
    .into()
}
