import Engine

/// Hands named tensors to the model's layers while they are built, and checks them.
///
/// The architecture is written once (the layers' initialisers ask for tensors by name and
/// shape). In *recording* mode that walk yields the parameter list of a configuration (for
/// `model init`, `model info`, and checks); in *loading* mode it takes tensors from a weights
/// file and collects every missing and mis-shaped name, so ``finish()`` can report all problems
/// at once together with the extra tensors nobody asked for.
package final class Parameters {
    /// Name and shape of every parameter asked for, in order.
    package private(set) var specs: [(name: String, shape: [Int])] = []
    let source: [String: Tensor]?
    private var missing: [String] = []
    private var misshaped: [String] = []
    private var used: Set<String> = []
    private var placeholders: [Tensor] = []

    /// Recording mode: no values, just the list of parameters.
    package init() { source = nil }

    /// Loading mode: take values from `tensors`.
    package init(tensors: [String: Tensor]) { source = tensors }

    /// Whether layers should precompute derived data (Winograd filters, code norms).
    package var materialising: Bool { source != nil }

    /// The tensor `name`, which must have `shape`.
    package func tensor(_ name: String, _ shape: [Int]) -> Tensor {
        specs.append((name, shape))
        if let src = source {
            used.insert(name)
            if let t = src[name] {
                if t.shape == shape { return t }
                misshaped.append("\(name) (expected \(shape), got \(t.shape))")
            } else {
                missing.append(name)
            }
        }
        return placeholder(shape)
    }

    private func placeholder(_ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        if let p = placeholders.first(where: { $0.count >= n }) { return Tensor(shape: shape, viewing: p.data) }
        let p = Tensor.zeros([n])
        placeholders.append(p)
        return Tensor(shape: shape, viewing: p.data)
    }

    /// Throws one ``ModelError`` listing every missing, extra and mis-shaped tensor.
    package func finish(file: String) throws {
        guard let src = source else { return }
        let extra = src.keys.filter { !used.contains($0) }.sorted()
        if missing.isEmpty && extra.isEmpty && misshaped.isEmpty { return }
        var lines: [String] = []
        if !missing.isEmpty { lines.append("missing \(missing.count): \(missing.joined(separator: ", "))") }
        if !extra.isEmpty { lines.append("extra \(extra.count): \(extra.joined(separator: ", "))") }
        if !misshaped.isEmpty { lines.append("wrong shape \(misshaped.count): \(misshaped.joined(separator: ", "))") }
        var e = ModelError(.weightMismatch, "\(file) does not match the manifest — " + lines.joined(separator: "; "))
        e.missing = missing
        e.extra = extra
        e.misshaped = misshaped.map { String($0.prefix { $0 != " " }) }
        throw e
    }

    // MARK: layer helpers

    /// `prefix.weight [out, in, k, k]`, `prefix.bias [out]`.
    func conv(_ prefix: String, _ cin: Int, _ cout: Int, k: Int, stride: Int = 1, padding: Int = 0) -> Conv2D {
        let w = tensor(prefix + ".weight", [cout, cin, k, k])
        let b = tensor(prefix + ".bias", [cout])
        return Conv2D(weight: w, bias: b, stride: stride, padding: padding, algorithm: materialising ? .auto : .im2col)
    }

    /// `prefix.weight [out, in]`, `prefix.bias [out]`.
    func linear(_ prefix: String, _ cin: Int, _ cout: Int) -> Linear {
        Linear(weight: tensor(prefix + ".weight", [cout, cin]), bias: tensor(prefix + ".bias", [cout]))
    }

    func groupNorm(_ prefix: String, _ c: Int, groups: Int) -> GroupNorm {
        GroupNorm(groups: groups, weight: tensor(prefix + ".weight", [c]), bias: tensor(prefix + ".bias", [c]), eps: 1e-6)
    }

    func layerNorm(_ prefix: String, _ d: Int) -> LayerNorm {
        LayerNorm(weight: tensor(prefix + ".weight", [d]), bias: tensor(prefix + ".bias", [d]), eps: 1e-5)
    }

    func attention(_ prefix: String, dim: Int, contextDim: Int, heads: Int) -> MultiHeadAttention {
        MultiHeadAttention(q: linear(prefix + ".q", dim, dim), k: linear(prefix + ".k", contextDim, dim),
                           v: linear(prefix + ".v", contextDim, dim), out: linear(prefix + ".out", dim, dim), heads: heads)
    }
}
