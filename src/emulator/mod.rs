//! A Dragonfly-master emulator for tests, the demo and the benchmark (feature `emulator`).
