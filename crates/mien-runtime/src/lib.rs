//! mien-runtime
