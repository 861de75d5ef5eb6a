//! Generating `impl exactly::Consumes`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::DeriveInput;
use syn::spanned::Spanned;

use crate::attr::{CodecChoice, DeliveryChoice, HandlerAttrs, ModeChoice};

pub(crate) fn derive_handler(input: &DeriveInput) -> TokenStream {
    let mut errors = Vec::new();
    let attrs = HandlerAttrs::parse(&input.attrs, &mut errors);
    let ident = &input.ident;
    let missing = |what: &str, example: &str| {
        syn::Error::new(ident.span(), format!("missing `{what}` in #[exactly(...)] on `{ident}`: {example}"))
    };
    if !input.attrs.iter().any(|a| a.path().is_ident("exactly")) {
        errors.push(syn::Error::new(
            ident.span(),
            format!(
                "`#[derive(Handler)]` on `{ident}` needs `#[exactly(topic = \"...\", group = \"...\", payload = Type)]`"
            ),
        ));
    } else if attrs.incomplete {
        // The parse error already stands; "missing" errors would only repeat it.
    } else {
        if attrs.topics.is_none() {
            errors.push(missing("topic", "add `topic = \"orders\"` or `topics = [\"a\", \"b\"]`"));
        }
        if attrs.group.is_none() {
            errors
                .push(missing("group", "add `group = \"my-service\"`, the consumer group whose positions are stored"));
        }
        if attrs.payload.is_none() {
            errors.push(missing("payload", "add `payload = MyType`, the type messages decode into"));
        }
    }

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let payload = attrs.payload.as_ref().map_or_else(|| quote!(()), |ty| quote!(#ty));
    let key = attrs.key.as_ref().map_or_else(|| quote!(::std::vec::Vec<u8>), |ty| quote!(#ty));
    // Spanned on the attribute's values, so an unmet `Codec`/`Key` bound is reported there.
    let codec = match &attrs.codec {
        None => {
            let span = attrs.payload.as_ref().map_or_else(|| ident.span(), |ty| ty.span());
            quote_spanned!(span=> ::exactly::__private::Json)
        }
        Some(CodecChoice::Builtin(name, span)) => {
            let name = syn::Ident::new(name, *span);
            quote_spanned!(*span=> ::exactly::__private::#name)
        }
        Some(CodecChoice::Custom(path)) => quote!(#path),
    };

    if !errors.is_empty() {
        // The errors, plus an impl that satisfies the trait so they are the only ones shown.
        let errors = errors.iter().map(syn::Error::to_compile_error);
        return quote! {
            #(#errors)*
            const _: () = {
                impl #impl_generics ::exactly::Consumes for #ident #ty_generics #where_clause {
                    type Key = #key;
                    type Payload = #payload;
                    type Codec = ::exactly::__private::Fallback;
                    type Mode = ::exactly::mode::Database;
                    fn subscription(&self) -> ::exactly::Subscription {
                        ::core::unreachable!()
                    }
                }
            };
        };
    }
    let topics = attrs.topics.unwrap_or_default();
    let group = attrs.group.map(|g| g.value()).unwrap_or_default();
    let mode = match attrs.mode {
        Some(ModeChoice::Kafka) => quote!(::exactly::mode::Kafka),
        Some(ModeChoice::Database) | None => quote!(::exactly::mode::Database),
    };
    let outputs = attrs.outputs.unwrap_or_default();
    let retry = attrs.retry.map(|retry| {
        let attempts = retry.attempts.map(|n| quote!(.max_attempts(#n)));
        let backoff = retry.backoff_ms.map(|n| quote!(.initial_backoff(::core::time::Duration::from_millis(#n))));
        let max = retry.max_backoff_ms.map(|n| quote!(.max_backoff(::core::time::Duration::from_millis(#n))));
        quote!(.with_retry(::exactly::RetryPolicy::default() #attempts #backoff #max))
    });
    let parking = attrs.key_parking.then(|| quote!(.with_key_parking()));
    let concurrency = attrs.key_concurrency.map(|lanes| quote!(.with_key_concurrency(#lanes)));
    let dead_letter_topic = attrs.dead_letter_topic.map(|topic| quote!(.with_dead_letter_topic(#topic)));
    let headers = attrs.without_headers.then(|| quote!(.without_headers()));
    let delivery = match attrs.delivery {
        Some(DeliveryChoice::PublishSubscribe) => quote!(PublishSubscribe),
        Some(DeliveryChoice::PointToPoint) | None => quote!(PointToPoint),
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::exactly::Consumes for #ident #ty_generics #where_clause {
                type Key = #key;
                type Payload = #payload;
                type Codec = #codec;
                type Mode = #mode;

                fn subscription(&self) -> ::exactly::Subscription {
                    ::exactly::Subscription::new([#(#topics),*], #group, ::exactly::Delivery::#delivery)
                        .with_outputs::<&str>([#(#outputs),*])
                        #retry #parking #concurrency #dead_letter_topic #headers
                }
            }
        };
    }
}
