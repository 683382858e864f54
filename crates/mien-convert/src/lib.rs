//! mien-convert
