//! Ahead-of-time arena memory planner.
//!
//! Every activation buffer gets a fixed byte offset in one arena. Steps:
//!
//! 1. **Liveness.** Each [`BufferRequest`] has an inclusive lifetime
//!    `[first_use, last_use]` in op-step units. Graph inputs use
//!    `first_use = 0`; graph outputs use `last_use = usize::MAX` (any value
//!    `>= n_ops` works too: it only has to cover the last op). A
//!    `last_use < first_use` (a buffer that is never read) is treated as
//!    `last_use = first_use`: the producing op still writes it.
//! 2. **In-place merging.** A request with `inplace_of: Some(j)` shares its
//!    bytes with buffer `j` when the lifetimes and sizes allow it (see
//!    [`BufferRequest::inplace_of`]). Chains merge transitively into one group.
//! 3. **Greedy by size.** Groups are placed largest first (ties: earlier
//!    `first_use`, then lower index), each at the lowest aligned offset that
//!    does not overlap, in memory, a placed group whose lifetime intersects
//!    its own (TFLM's `GreedyMemoryPlanner`, first fit by offset).
//!
//! [`Plan::lower_bound`] is the most bytes live at any one step, after
//! merging; no placement can use less. [`verify`] checks a plan independently.

/// One activation buffer to place in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferRequest {
    /// Size in bytes; rounded up to the alignment when placed. Zero-size
    /// buffers get offset 0 and take no room.
    pub size: usize,
    /// Index of the op that produces the buffer (graph inputs: 0).
    pub first_use: usize,
    /// Index of the last op that reads the buffer, inclusive (graph outputs:
    /// `usize::MAX`).
    pub last_use: usize,
    /// The producing op may write this buffer over buffer `j`. Accepted only
    /// if `j` is another non-zero buffer of the same `size`, `j.first_use <
    /// self.first_use == j.last_use` (`j` dies at the op producing this one),
    /// and no lower-indexed request already claimed `j`. Whether the op may
    /// run in place at all (elementwise, `j` not a preserved graph input or
    /// output) is the caller's call. Rejected requests are planned normally.
    pub inplace_of: Option<usize>,
}

/// The result of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Byte offset of each request in the arena, in request order.
    pub offsets: Vec<usize>,
    /// Arena size in bytes: the end of the highest placed buffer.
    pub arena_size: usize,
    /// Most (aligned) bytes live at any one step, merged groups counted once.
    pub lower_bound: usize,
    /// How many `inplace_of` requests were accepted and merged.
    pub inplace_merged: usize,
    /// The alignment the plan was made with (at least 1).
    pub alignment: usize,
}

fn align_up(x: usize, alignment: usize) -> usize {
    x.div_ceil(alignment) * alignment
}

/// Inclusive lifetime, with `last_use < first_use` clamped up.
fn lifetime(r: &BufferRequest) -> (usize, usize) {
    (r.first_use, r.last_use.max(r.first_use))
}

fn overlap(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// The accepted in-place source of each request (`None` if rejected/absent).
fn inplace_links(requests: &[BufferRequest]) -> Vec<Option<usize>> {
    let mut claimed = vec![false; requests.len()];
    let mut links = vec![None; requests.len()];
    for (i, r) in requests.iter().enumerate() {
        let Some(j) = r.inplace_of else { continue };
        let Some(src) = requests.get(j) else { continue };
        let (sf, sl) = lifetime(src);
        if j != i && !claimed[j] && r.size > 0 && r.size == src.size && sf < r.first_use && sl == r.first_use {
            claimed[j] = true;
            links[i] = Some(j);
        }
    }
    links
}

/// Plans offsets for `requests` in one arena; offsets and buffer sizes are
/// rounded to `alignment` (0 is treated as 1).
pub fn plan(requests: &[BufferRequest], alignment: usize) -> Plan {
    let alignment = alignment.max(1);
    let n = requests.len();
    let links = inplace_links(requests);

    // Group root of each request. A link always points at a buffer with a
    // strictly earlier first_use, so visiting by first_use resolves roots.
    let mut by_first: Vec<usize> = (0..n).collect();
    by_first.sort_by_key(|&i| (requests[i].first_use, i));
    let mut root: Vec<usize> = (0..n).collect();
    for &i in &by_first {
        if let Some(j) = links[i] {
            root[i] = root[j];
        }
    }

    // Group lifetimes (chains are contiguous, so min first / max last).
    let mut span: Vec<(usize, usize)> = requests.iter().map(lifetime).collect();
    for i in 0..n {
        let (f, l) = lifetime(&requests[i]);
        let g = &mut span[root[i]];
        *g = (g.0.min(f), g.1.max(l));
    }
    let mut groups: Vec<usize> = (0..n).filter(|&i| root[i] == i && requests[i].size > 0).collect();
    let gsize = |g: usize| align_up(requests[g].size, alignment);

    // Lower bound: sweep over lifetime start/end events.
    let mut events: Vec<(usize, bool, usize)> = Vec::with_capacity(2 * groups.len());
    for &g in &groups {
        events.push((span[g].0, true, gsize(g)));
        if let Some(end) = span[g].1.checked_add(1) {
            events.push((end, false, gsize(g)));
        }
    }
    // At one step, ends (false) sort before starts (true).
    events.sort_unstable();
    let (mut live, mut lower_bound) = (0usize, 0usize);
    for &(_, start, size) in &events {
        if start {
            live += size;
            lower_bound = lower_bound.max(live);
        } else {
            live -= size;
        }
    }

    // Greedy by size, first fit by offset.
    groups.sort_by_key(|&g| (std::cmp::Reverse(gsize(g)), span[g].0, g));
    let mut offset_of = vec![0usize; n];
    let mut placed: Vec<usize> = Vec::with_capacity(groups.len());
    let mut arena_size = 0;
    for &g in &groups {
        let size = gsize(g);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| overlap(span[p], span[g]))
            .map(|&p| (offset_of[p], offset_of[p] + gsize(p)))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for &(start, end) in &busy {
            if start >= offset + size {
                break;
            }
            offset = offset.max(end);
        }
        offset_of[g] = offset;
        arena_size = arena_size.max(offset + size);
        placed.push(g);
    }

    let offsets = (0..n).map(|i| if requests[i].size == 0 { 0 } else { offset_of[root[i]] }).collect();
    Plan { offsets, arena_size, lower_bound, inplace_merged: links.iter().flatten().count(), alignment }
}

/// Checks `plan` against `requests`: one offset per request, aligned offsets,
/// zero-size buffers at 0, every buffer (aligned size) inside `arena_size`,
/// `lower_bound <= arena_size`, and no two buffers with intersecting
/// lifetimes overlapping in memory, except an in-place pair: `i.inplace_of ==
/// Some(j)` at the same offset, same size, with `j` dying at the step that
/// produces `i` (checked here independently of [`plan`]'s merging).
pub fn verify(requests: &[BufferRequest], plan: &Plan) -> Result<(), String> {
    let a = plan.alignment.max(1);
    if plan.offsets.len() != requests.len() {
        return Err(format!("{} offsets for {} requests", plan.offsets.len(), requests.len()));
    }
    if plan.lower_bound > plan.arena_size {
        return Err(format!("lower bound {} exceeds arena {}", plan.lower_bound, plan.arena_size));
    }
    let inplace = |i: usize, j: usize| {
        let (ri, rj) = (&requests[i], &requests[j]);
        ri.inplace_of == Some(j)
            && plan.offsets[i] == plan.offsets[j]
            && ri.size == rj.size
            && rj.first_use < ri.first_use
            && lifetime(rj).1 == ri.first_use
    };
    let extent = |i: usize| (plan.offsets[i], plan.offsets[i] + align_up(requests[i].size, a));
    for (i, r) in requests.iter().enumerate() {
        let (off, end) = extent(i);
        if r.size == 0 {
            if off != 0 {
                return Err(format!("zero-size buffer {i} at offset {off}"));
            }
            continue;
        }
        if off % a != 0 {
            return Err(format!("buffer {i} offset {off} not aligned to {a}"));
        }
        if end > plan.arena_size {
            return Err(format!("buffer {i} ends at {end} past arena {}", plan.arena_size));
        }
    }
    for i in 0..requests.len() {
        for j in i + 1..requests.len() {
            if requests[i].size == 0 || requests[j].size == 0 {
                continue;
            }
            if inplace(i, j) || inplace(j, i) {
                continue;
            }
            let (ai, bi) = extent(i);
            let (aj, bj) = extent(j);
            if overlap(lifetime(&requests[i]), lifetime(&requests[j])) && ai < bj && aj < bi {
                return Err(format!("buffers {i} [{ai},{bi}) and {j} [{aj},{bj}) overlap while both live"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: usize, first_use: usize, last_use: usize) -> BufferRequest {
        BufferRequest { size, first_use, last_use, inplace_of: None }
    }

    fn checked(requests: &[BufferRequest]) -> Plan {
        let p = plan(requests, 16);
        verify(requests, &p).unwrap();
        assert!(p.lower_bound <= p.arena_size);
        p
    }

    #[test]
    fn chain_uses_two_largest_adjacent() {
        // a -> b -> c; aligned sizes 112, 208, 64.
        let p = checked(&[req(100, 0, 1), req(200, 1, 2), req(50, 2, usize::MAX)]);
        assert_eq!(p.arena_size, 112 + 208);
        assert_eq!(p.lower_bound, 112 + 208);
        assert_eq!(p.offsets[0], p.offsets[2], "a and c never coexist");
    }

    #[test]
    fn diamond_reaches_lower_bound() {
        // op0: a; op1: b = f(a); op2: c = g(a); op3: d = b + c.
        let r = [req(64, 0, 2), req(32, 1, 3), req(32, 2, 3), req(64, 3, usize::MAX)];
        let p = checked(&r);
        assert_eq!(p.lower_bound, 128);
        assert_eq!(p.arena_size, 128);
        assert_eq!(p.offsets[0], p.offsets[3]);
    }

    #[test]
    fn inplace_chain_shrinks_arena() {
        // a = conv; b = add(a, ..) in place; c = relu(b) in place; d = fc(c).
        let mut r = vec![req(64, 0, 1), req(64, 1, 2), req(64, 2, 3), req(16, 3, usize::MAX)];
        let without = checked(&r);
        r[1].inplace_of = Some(0);
        r[2].inplace_of = Some(1);
        let with = checked(&r);
        assert_eq!(without.inplace_merged, 0);
        assert_eq!(with.inplace_merged, 2);
        assert_eq!(without.arena_size, 128);
        assert_eq!(with.arena_size, 80);
        assert_eq!(with.lower_bound, 80);
        assert!(with.offsets[..3].iter().all(|&o| o == with.offsets[0]));
    }

    #[test]
    fn inplace_rejected_when_unsafe() {
        // Source still read at op 3, after b is produced at op 1.
        let mut r = vec![req(64, 0, 3), req(64, 1, 3), req(64, 3, usize::MAX)];
        r[1].inplace_of = Some(0);
        let p = checked(&r);
        assert_eq!(p.inplace_merged, 0);
        assert_ne!(p.offsets[0], p.offsets[1]);
        // Size mismatch, self-reference, out of range and a double claim.
        let mut r = vec![req(64, 0, 1), req(48, 1, 2), req(64, 1, 2), req(64, 1, 2)];
        r[1].inplace_of = Some(0);
        r[2].inplace_of = Some(0);
        r[3].inplace_of = Some(0);
        let p = checked(&r);
        assert_eq!(p.inplace_merged, 1);
        assert_eq!(p.offsets[2], p.offsets[0]);
        let mut r = vec![req(64, 0, 1), req(64, 1, 2)];
        r[1].inplace_of = Some(1);
        r[0].inplace_of = Some(7);
        assert_eq!(checked(&r).inplace_merged, 0);
    }

    #[test]
    fn zero_size_and_alignment() {
        let r = [req(0, 0, 5), req(1, 0, 5), req(17, 1, 2), req(0, 2, 2)];
        let p = plan(&r, 16);
        verify(&r, &p).unwrap();
        assert_eq!(p.offsets[0], 0);
        assert_eq!(p.offsets[3], 0);
        assert_eq!(p.arena_size, 16 + 32);
        assert_eq!(p.lower_bound, 48);
        assert_eq!(plan(&[], 16).arena_size, 0);
    }

    #[test]
    fn verify_catches_bad_plans() {
        let r = [req(64, 0, 2), req(64, 1, 3)];
        let mut p = checked(&r);
        p.offsets[1] = p.offsets[0];
        assert!(verify(&r, &p).is_err(), "overlap");
        let mut p = checked(&r);
        p.offsets[1] += 8;
        assert!(verify(&r, &p).is_err(), "misaligned / past the end");
        let mut p = checked(&r);
        p.arena_size -= 16;
        assert!(verify(&r, &p).is_err(), "arena too small");
    }

    /// Deterministic LCG (Knuth's MMIX constants).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    #[test]
    fn random_plans_verify_and_respect_lower_bound() {
        let mut rng = Lcg(0x6d6f7465);
        let (cases, mut ratio_sum, mut measured, mut merged) = (500, 0.0, 0, 0);
        for _ in 0..cases {
            let n_ops = 1 + rng.below(40);
            let n = 1 + rng.below(60);
            let mut r: Vec<BufferRequest> = (0..n)
                .map(|_| {
                    let first = rng.below(n_ops);
                    let last = match rng.below(10) {
                        0 => usize::MAX,
                        1 => first.saturating_sub(1), // never read
                        _ => first + rng.below(1 + (n_ops - first).min(8)),
                    };
                    let size = if rng.below(20) == 0 { 0 } else { 1 + rng.below(4096) };
                    req(size, first, last)
                })
                .collect();
            // In-place attempts: mostly against a plausible source.
            for i in 0..n {
                if rng.below(3) == 0 {
                    let j = rng.below(n + 1);
                    if j < n && rng.below(2) == 0 {
                        let (f, s) = (r[j].last_use, r[j].size);
                        if f != usize::MAX && r[j].first_use < f {
                            r[i].first_use = f;
                            r[i].size = s;
                            r[i].last_use = r[i].last_use.max(f);
                        }
                    }
                    r[i].inplace_of = Some(j);
                }
            }
            let p = plan(&r, 16);
            verify(&r, &p).unwrap_or_else(|e| panic!("{e}\n{r:?}\n{p:?}"));
            assert!(p.arena_size >= p.lower_bound);
            let total: usize = r.iter().map(|b| align_up(b.size, 16)).sum();
            assert!(p.arena_size <= total);
            merged += p.inplace_merged;
            if p.lower_bound > 0 {
                ratio_sum += p.arena_size as f64 / p.lower_bound as f64;
                measured += 1;
            }
        }
        let avg = ratio_sum / measured as f64;
        println!(
            "plan: {cases} random cases, avg arena/lower_bound = {avg:.4} over {measured}, \
             {merged} in-place merges"
        );
        assert!(merged > 0);
        assert!(avg < 1.5, "greedy planner far from the bound: {avg}");
    }
}
