//! Glue shared by the thin virtup binaries: the modules' option sets and their observe → plan → apply drivers.

pub mod cli;
pub mod context;
pub mod host;
pub mod instance;
pub mod inventory;
pub mod module;
pub mod specs;
pub mod template;
