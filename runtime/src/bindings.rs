//! Host bindings of the three plugin worlds, sharing one set of record types and host imports.

use wasmtime::component::{HasSelf, Linker};

use crate::instance::HostState;

pub mod transform {
    wasmtime::component::bindgen!({ world: "transform", path: "../sdk/wit" });
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

pub use transform::weir::plugin::types::{Header, InputRecord, OutputRecord};
pub(crate) use transform::weir::plugin::{host, schema_registry};

/// A linker per world: WASI (nothing granted, see `instance.rs`) plus Weir's host imports.
pub(crate) struct Linkers {
    pub transform: Linker<HostState>,
    pub partitioner: Linker<HostState>,
    pub validator: Linker<HostState>,
}

impl Linkers {
    pub fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let base = || -> wasmtime::Result<Linker<HostState>> {
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            Ok(linker)
        };
        let mut transform = base()?;
        transform::Transform::add_to_linker::<_, HasSelf<_>>(&mut transform, |s| s)?;
        let mut partitioner = base()?;
        partitioner::Partitioner::add_to_linker::<_, HasSelf<_>>(&mut partitioner, |s| s)?;
        let mut validator = base()?;
        validator::Validator::add_to_linker::<_, HasSelf<_>>(&mut validator, |s| s)?;
        Ok(Self { transform, partitioner, validator })
    }
}
