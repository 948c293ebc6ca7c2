//! Latency histograms (`webhook.endpoint_stats*.latency_hist`): adding two
//! of them, and the aggregate `webhook._hist_sum` over many.
//!
//! Rust and not SQL: a SQL element-wise sum unnests every array into 20
//! rows, and `webhook.endpoint_health` sums thousands of them at each poll
//! (measured: 1.6 s for a day of per-minute rows of 100 endpoints, which is
//! what made the hourly table and this file worth it).

/// `a + b` element by element; a missing or null element counts as 0, so
/// histograms of different lengths add up.
fn add_into<T, U>(acc: &mut Vec<T>, values: impl Iterator<Item = Option<U>>)
where
    T: Copy + Default + std::ops::AddAssign + From<U>,
{
    for (i, v) in values.enumerate() {
        let v = v.map_or_else(T::default, T::from);
        match acc.get_mut(i) {
            Some(slot) => *slot += v,
            None => acc.push(v),
        }
    }
}

#[pgrx::pg_schema]
mod webhook {
    use pgrx::prelude::*;

    /// Two histograms added element by element (the recorder's upsert).
    /// Saturates instead of wrapping: a count is never negative.
    #[pg_extern(immutable, parallel_safe, name = "_hist_add")]
    fn hist_add(a: Option<Array<'_, i32>>, b: Option<Array<'_, i32>>) -> Vec<i32> {
        let mut acc: Vec<i64> = Vec::with_capacity(20);
        if let Some(a) = a {
            super::add_into(&mut acc, a.iter());
        }
        if let Some(b) = b {
            super::add_into(&mut acc, b.iter());
        }
        acc.into_iter()
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX))
            .collect()
    }

    /// The transition function of `webhook._hist_sum`: the running sum (in
    /// bigint, so that a month of counters cannot overflow) plus one row.
    #[pg_extern(immutable, parallel_safe, name = "_hist_acc")]
    fn hist_acc(state: Option<Array<'_, i64>>, value: Option<Array<'_, i32>>) -> Vec<i64> {
        let mut acc: Vec<i64> = match state {
            Some(s) => s.iter().map(|v| v.unwrap_or(0)).collect(),
            None => Vec::with_capacity(20),
        };
        if let Some(v) = value {
            super::add_into(&mut acc, v.iter());
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::add_into;

    #[test]
    fn adds_element_by_element_whatever_the_lengths() {
        let mut acc: Vec<i64> = vec![1, 2];
        add_into(&mut acc, [Some(10i32), None, Some(30)].into_iter());
        assert_eq!(acc, vec![11, 2, 30]);
        let mut empty: Vec<i64> = Vec::new();
        add_into(&mut empty, std::iter::empty::<Option<i32>>());
        assert!(empty.is_empty());
    }
}
