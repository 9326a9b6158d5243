//! strata-gc: `Gc<T>` with reference counting and a generational cycle collector.
