//! dm-verity hash trees, bit-exact with cryptsetup's veritysetup (format 0 and 1).
