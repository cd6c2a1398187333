import BLAS

/// Scaled dot-product attention on token-major `[N, D]` sequences.
package enum Attention {
    /// `softmax(q_h k_hᵀ / √d_h) v_h` for each of `heads` heads (head `h` is the column block
    /// `h·d_h ..< (h+1)·d_h`); returns `[Nq, D]`. The per-head products read and write strided
    /// column blocks, so no head is copied.
    ///
    /// The work is split into items of (head, block of query rows); each item runs its two
    /// products single-threaded with its softmax in between, on scores private to the thread.
    /// The threads meet once per call instead of three times per head: the products here are
    /// small (a few hundred tokens), where splitting each one over the threads costs more in
    /// hand-offs than it gains.
    package static func scaledDotProduct(q: Tensor, k: Tensor, v: Tensor, heads: Int, _ ctx: ComputeContext) -> Tensor {
        ctx.timed("attention \(q.shape[0])×\(k.shape[0])×\(q.shape.last!) \(heads) heads") { compute(q: q, k: k, v: v, heads: heads, ctx) }
    }

    private static func compute(q: Tensor, k: Tensor, v: Tensor, heads: Int, _ ctx: ComputeContext) -> Tensor {
        let d = q.shape.last!, nq = q.count / d, nk = k.count / d
        precondition(k.shape.last == d && v.shape.last == d && v.count == k.count, "attention: q \(q.shape) k \(k.shape) v \(v.shape)")
        precondition(d % heads == 0, "attention: width \(d) not divisible by \(heads) heads")
        let dh = d / heads
        let out = ctx.workspace.tensor([nq, d])
        let scale = 1 / Float(dh).squareRoot()
        // query rows per item: enough items for every thread (several each when there are few
        // heads), each item's scores small enough to stay in cache
        let threads = ctx.threads
        let wanted = heads >= 2 * threads ? 1 : (2 * threads + heads - 1) / heads
        var rows = max(8, (nq + wanted - 1) / wanted)
        rows = min(rows, max(8, 65_536 / max(1, nk)))
        if threads == 1 { rows = min(nq, max(8, 65_536 / max(1, nk))) }
        let rowBlocks = (nq + rows - 1) / rows
        let items = heads * rowBlocks
        let workers = min(threads, items)
        let scores = ctx.workspace.allocate(workers * rows * nk)
        let qd = q.data, kd = k.data, vd = v.data, od = out.data
        let kernels = ctx.kernels
        ctx.claim(items, workers: workers) { w, item in
            let sc = scores + w * rows * nk
            let h = item / rowBlocks, r0 = (item % rowBlocks) * rows, r = min(rows, nq - r0)
            BLAS.sgemm(transB: true, m: r, n: nk, k: dh, alpha: scale, a: qd + r0 * d + h * dh, lda: d,
                       b: kd + h * dh, ldb: d, c: sc, ldc: nk)
            Activation.softmaxRows(sc, rows: r, cols: nk, kernels: kernels)
            BLAS.sgemm(m: r, n: dh, k: nk, a: sc, lda: nk, b: vd + h * dh, ldb: d,
                       c: od + r0 * d + h * dh, ldc: d)
        }
        ctx.flops += 4 * Double(nq * nk * d)
        return out
    }
}

/// Multi-head attention with separate query, key, value and output projections
/// (`q`, `k`, `v`, `out` — the reference's tensor names). Self-attention when the key/value
/// sequence is the query sequence, cross-attention otherwise.
package struct MultiHeadAttention: @unchecked Sendable {
    package let q: Linear, k: Linear, v: Linear, out: Linear
    package let heads: Int

    package init(q: Linear, k: Linear, v: Linear, out: Linear, heads: Int) {
        self.q = q; self.k = k; self.v = v; self.out = out; self.heads = heads
    }

    /// Attends `x` (`[Nq, Dq]`) to `context` (`[Nk, Dk]`), returning `[Nq, out]`.
    package func callAsFunction(_ x: Tensor, context: Tensor, _ ctx: ComputeContext) -> Tensor {
        let qq = q(x, ctx), kk = k(context, ctx), vv = v(context, ctx)
        let a = Attention.scaledDotProduct(q: qq, k: kk, v: vv, heads: heads, ctx)
        return out(a, ctx)
    }
}
