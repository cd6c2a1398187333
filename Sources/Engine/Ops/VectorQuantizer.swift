import BLAS

/// Nearest-code vector quantisation against a codebook `[K, E]`.
///
/// Distances are `‖x‖² − 2 x·c + ‖c‖²`, the cross term one sgemm; ties go to the lowest index
/// (as `torch.argmin`). The codebook norms are computed once at construction.
package struct VectorQuantizer: @unchecked Sendable {
    /// `[K, E]`.
    package let codebook: Tensor
    let norms: [Float]
    package var codes: Int { codebook.shape[0] }
    package var dim: Int { codebook.shape[1] }

    package init(codebook: Tensor) {
        precondition(codebook.shape.count == 2, "codebook must be [K, E], got \(codebook.shape)")
        self.codebook = codebook
        let k = codebook.shape[0], e = codebook.shape[1]
        norms = (0..<k).map { i in
            var s: Float = 0
            for j in 0..<e { let v = codebook.data[i * e + j]; s += v * v }
            return s
        }
    }

    /// Quantises a feature map `z` (`[E, H, W]`): returns the code index of every position
    /// (row-major) and the quantised map `[E, H, W]` (a workspace tensor).
    package func callAsFunction(_ z: Tensor, _ ctx: ComputeContext) -> (indices: [Int32], quantized: Tensor) {
        let e = dim, k = codes
        precondition(z.shape[0] == e, "quantize: input \(z.shape), codebook dim \(e)")
        let n = z.count / e
        let dist = ctx.workspace.allocate(n * k)
        ctx.gemm(transA: true, transB: true, m: n, n: k, k: e, alpha: -2, a: z.data, lda: n,
                   b: codebook.data, ldb: e, c: dist, ldc: k)
        ctx.flops += 2 * Double(n * k * e)
        var zz = [Float](repeating: 0, count: n)
        for j in 0..<e { let row = z.data + j * n; for p in 0..<n { zz[p] += row[p] * row[p] } }
        var idx = [Int32](repeating: 0, count: n)
        let q = ctx.workspace.tensor(z.shape)
        norms.withUnsafeBufferPointer { cn in
            for p in 0..<n {
                let row = dist + p * k
                var best = Float.infinity, bi = 0
                for c in 0..<k {
                    let d = (zz[p] + row[c]) + cn[c]
                    if d < best { best = d; bi = c }
                }
                idx[p] = Int32(bi)
                let code = codebook.data + bi * e
                for j in 0..<e { q.data[j * n + p] = code[j] }
            }
        }
        return (idx, q)
    }
}
