//! Summing the programs' per-CPU loss counters.

use aya::maps::{MapData, PerCpuArray};
use tracer_common::counters::Counter;

/// Totals across CPUs, indexed like [`Counter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterTotals([u64; Counter::COUNT as usize]);

impl CounterTotals {
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Self {
        let mut totals = [0; Counter::COUNT as usize];
        for counter in Counter::ALL {
            if let Ok(per_cpu) = map.get(&(counter as u32), 0) {
                totals[counter as usize] = per_cpu.iter().sum();
            }
        }
        Self(totals)
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}
