//! Host bindings of the plugin worlds: the current contract (`weir:plugin@0.2.3`,
//! `sdk/wit/plugin.wit`; components built for 0.2.0 to 0.2.2 are called through the same
//! bindings, a transform of theirs through the `typed-transform` world) and
//! the one before it (`weir:plugin@0.1.0`, `wit-0.1.0/`), which brokers still run. Each
//! version's worlds share one set of types and host imports.

pub mod transform {
    wasmtime::component::bindgen!({ world: "transform", path: "../sdk/wit" });
}
/// Transforms built for 0.2.0 and 0.2.1, which export `transformer` (a list of records).
pub mod typed_transform {
    wasmtime::component::bindgen!({
        world: "typed-transform",
        path: "../sdk/wit",
        with: {
            "weir:plugin/types": crate::bindings::transform::weir::plugin::types,
            "weir:plugin/host": crate::bindings::transform::weir::plugin::host,
            "weir:plugin/schema-registry": crate::bindings::transform::weir::plugin::schema_registry,
        },
    });
}
pub mod partitioner {
    wasmtime::component::bindgen!({
        world: "partitioner",
        path: "../sdk/wit",
        with: {
            "weir:plugin/types": crate::bindings::transform::weir::plugin::types,
            "weir:plugin/host": crate::bindings::transform::weir::plugin::host,
            "weir:plugin/schema-registry": crate::bindings::transform::weir::plugin::schema_registry,
        },
    });
}
pub mod validator {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../sdk/wit",
        with: {
            "weir:plugin/types": crate::bindings::transform::weir::plugin::types,
            "weir:plugin/host": crate::bindings::transform::weir::plugin::host,
            "weir:plugin/schema-registry": crate::bindings::transform::weir::plugin::schema_registry,
        },
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        world: "source",
        path: "../sdk/wit",
        with: {
            "weir:plugin/host": crate::bindings::transform::weir::plugin::host,
            "weir:plugin/schema-registry": crate::bindings::transform::weir::plugin::schema_registry,
        },
    });
}
pub mod sink {
    wasmtime::component::bindgen!({
        world: "sink",
        path: "../sdk/wit",
        with: {
            "weir:plugin/types": crate::bindings::transform::weir::plugin::types,
            "weir:plugin/host": crate::bindings::transform::weir::plugin::host,
            "weir:plugin/schema-registry": crate::bindings::transform::weir::plugin::schema_registry,
            "weir:plugin/connector": crate::bindings::source::weir::plugin::connector,
        },
    });
}

/// `weir:plugin@0.1.0`: a batch is a list of records, each with its own lists and strings.
pub mod v0_1 {
    pub mod transform {
        wasmtime::component::bindgen!({ world: "transform", path: "wit-0.1.0" });
    }
    pub mod partitioner {
        wasmtime::component::bindgen!({
            world: "partitioner",
            path: "wit-0.1.0",
            with: {
                "weir:plugin/types": crate::bindings::v0_1::transform::weir::plugin::types,
                "weir:plugin/host": crate::bindings::v0_1::transform::weir::plugin::host,
                "weir:plugin/schema-registry": crate::bindings::v0_1::transform::weir::plugin::schema_registry,
            },
        });
    }
    pub mod validator {
        wasmtime::component::bindgen!({
            world: "validator",
            path: "wit-0.1.0",
            with: {
                "weir:plugin/types": crate::bindings::v0_1::transform::weir::plugin::types,
                "weir:plugin/host": crate::bindings::v0_1::transform::weir::plugin::host,
                "weir:plugin/schema-registry": crate::bindings::v0_1::transform::weir::plugin::schema_registry,
            },
        });
    }
    pub(crate) use transform::weir::plugin::{host, schema_registry, types};
}

pub(crate) use source::weir::plugin::{connector, source_types};
pub(crate) use transform::weir::plugin::{host, schema_registry, types};
