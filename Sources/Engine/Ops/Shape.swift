/// Layout operations: residual add, concatenation and splitting, transposes, upsampling.
package enum Shape {
    /// `x += y` element-wise (residual connection).
    package static func addInPlace(_ x: Tensor, _ y: Tensor) {
        precondition(x.count == y.count, "add: \(x.shape) + \(y.shape)")
        let a = x.data, b = y.data
        for i in 0..<x.count { a[i] += b[i] }
    }

    /// `x[i, :] += row` for every row of a `[N, D]` tensor (broadcast add, e.g. embeddings).
    package static func addRows(_ x: Tensor, _ row: UnsafePointer<Float>) {
        let d = x.shape.last!, n = x.count / d
        for r in 0..<n { let p = x.data + r * d; for i in 0..<d { p[i] += row[i] } }
    }

    /// Concatenates `[C_i, ...]` tensors along the first dimension (channels, or rows).
    package static func concat(_ parts: [Tensor], _ ctx: ComputeContext) -> Tensor {
        let rest = Array(parts[0].shape.dropFirst())
        for p in parts { precondition(Array(p.shape.dropFirst()) == rest, "concat: \(p.shape) vs \(parts[0].shape)") }
        let out = ctx.workspace.tensor([parts.reduce(0) { $0 + $1.shape[0] }] + rest)
        var o = out.data
        for p in parts { o.update(from: p.data, count: p.count); o += p.count }
        return out
    }

    /// Concatenates `[C, H_i, W]` maps along height.
    package static func concatHeight(_ parts: [Tensor], _ ctx: ComputeContext) -> Tensor {
        let c = parts[0].shape[0], w = parts[0].shape[2]
        for p in parts { precondition(p.shape[0] == c && p.shape[2] == w, "concatHeight: \(p.shape) vs \(parts[0].shape)") }
        let h = parts.reduce(0) { $0 + $1.shape[1] }
        let out = ctx.workspace.tensor([c, h, w])
        for ch in 0..<c {
            var o = out.data + ch * h * w
            for p in parts {
                let n = p.shape[1] * w
                o.update(from: p.data + ch * n, count: n)
                o += n
            }
        }
        return out
    }

    /// Rows `from ..< from + count` of every channel of a `[C, H, W]` map (a copy).
    package static func sliceHeight(_ x: Tensor, from: Int, count: Int, _ ctx: ComputeContext) -> Tensor {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2]
        precondition(from >= 0 && from + count <= h, "sliceHeight: rows \(from)..<\(from + count) of \(x.shape)")
        let out = ctx.workspace.tensor([c, count, w])
        for ch in 0..<c { (out.data + ch * count * w).update(from: x.data + ch * h * w + from * w, count: count * w) }
        return out
    }

    /// Channels `from ..< from + count` of a `[C, ...]` tensor, as a view (no copy).
    package static func sliceChannels(_ x: Tensor, from: Int, count: Int) -> Tensor {
        let plane = x.count / x.shape[0]
        return Tensor(shape: [count] + x.shape.dropFirst(), data: x.data + from * plane, storage: x.storage)
    }

    /// `[R, C]` → `[C, R]` (a feature map `[C, H·W]` to tokens `[H·W, C]` and back).
    package static func transpose(_ x: Tensor, rows: Int, cols: Int, _ ctx: ComputeContext) -> Tensor {
        precondition(rows * cols == x.count, "transpose: \(rows)×\(cols) of \(x.shape)")
        let out = ctx.workspace.tensor([cols, rows])
        let s = x.data, d = out.data
        let B = 32
        var r0 = 0
        while r0 < rows {
            var c0 = 0
            while c0 < cols {
                for r in r0..<min(rows, r0 + B) {
                    for c in c0..<min(cols, c0 + B) { d[c * rows + r] = s[r * cols + c] }
                }
                c0 += B
            }
            r0 += B
        }
        return out
    }

    /// Nearest-neighbour 2× upsampling of a `[C, H, W]` map to `[C, 2H, 2W]`.
    package static func upsampleNearest2x(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        let c = x.shape[0], h = x.shape[1], w = x.shape[2]
        let out = ctx.workspace.tensor([c, 2 * h, 2 * w])
        let s = x.data, d = out.data
        ctx.parallelFor(c) { ch in
            for y in 0..<h {
                let src = s + (ch * h + y) * w
                let d0 = d + (ch * 2 * h + 2 * y) * 2 * w
                for xx in 0..<w { let v = src[xx]; d0[2 * xx] = v; d0[2 * xx + 1] = v }
                (d0 + 2 * w).update(from: d0, count: 2 * w)
            }
        }
        return out
    }
}
