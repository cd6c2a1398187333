import BLAS

/// Scaled dot-product attention on token-major `[N, D]` sequences.
public enum Attention {
    /// `softmax(q_h k_hᵀ / √d_h) v_h` for each of `heads` heads (head `h` is the column block
    /// `h·d_h ..< (h+1)·d_h`); returns `[Nq, D]`. Scores live in the workspace; the per-head
    /// products read and write strided column blocks, so no head is copied.
    public static func scaledDotProduct(q: Tensor, k: Tensor, v: Tensor, heads: Int, _ ctx: ComputeContext) -> Tensor {
        let d = q.shape.last!, nq = q.count / d, nk = k.count / d
        precondition(k.shape.last == d && v.shape.last == d && v.count == k.count, "attention: q \(q.shape) k \(k.shape) v \(v.shape)")
        precondition(d % heads == 0, "attention: width \(d) not divisible by \(heads) heads")
        let dh = d / heads
        let out = ctx.workspace.tensor([nq, d])
        let scores = ctx.workspace.allocate(nq * nk)
        let scale = 1 / Float(dh).squareRoot()
        for h in 0..<heads {
            ctx.gemm(transB: true, m: nq, n: nk, k: dh, alpha: scale, a: q.data + h * dh, lda: d,
                       b: k.data + h * dh, ldb: d, c: scores, ldc: nk)
            Activation.softmaxRows(scores, rows: nq, cols: nk, ctx)
            ctx.gemm(m: nq, n: dh, k: nk, a: scores, lda: nk, b: v.data + h * dh, ldb: d,
                       c: out.data + h * dh, ldc: d)
        }
        ctx.flops += 4 * Double(nq * nk * d)
        return out
    }
}

/// Multi-head attention with separate query, key, value and output projections
/// (`q`, `k`, `v`, `out` — the reference's tensor names). Self-attention when the key/value
/// sequence is the query sequence, cross-attention otherwise.
public struct MultiHeadAttention: @unchecked Sendable {
    public let q: Linear, k: Linear, v: Linear, out: Linear
    public let heads: Int

    public init(q: Linear, k: Linear, v: Linear, out: Linear, heads: Int) {
        self.q = q; self.k = k; self.v = v; self.out = out; self.heads = heads
    }

    /// Attends `x` (`[Nq, Dq]`) to `context` (`[Nk, Dk]`), returning `[Nq, out]`.
    public func callAsFunction(_ x: Tensor, context: Tensor, _ ctx: ComputeContext) -> Tensor {
        let qq = q(x, ctx), kk = k(context, ctx), vv = v(context, ctx)
        let a = Attention.scaledDotProduct(q: qq, k: kk, v: vv, heads: heads, ctx)
        return out(a, ctx)
    }
}
