//! b2bua (work in progress)
