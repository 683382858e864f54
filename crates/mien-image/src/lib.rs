//! mien-image
