/// A ``HaarCascade`` flattened for evaluation: contiguous node, leaf and feature tables.
struct CompiledCascade: Sendable {
    struct Node {
        var left: Int32
        var right: Int32
        var feature: Int32
        var threshold: Float
    }
    struct Classifier {
        var firstNode: Int32
        var firstLeaf: Int32
    }
    struct Stage {
        var firstClassifier: Int
        var count: Int
        var threshold: Float
    }
    /// A feature's rectangles: (x, y, w, h, weight) × 3; unused rectangles have weight 0 and size 0.
    struct Feature {
        var r: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32)
        var w: (Float, Float, Float)
    }

    let windowWidth: Int
    let windowHeight: Int
    let nodes: [Node]
    let leaves: [Float]
    let classifiers: [Classifier]
    let stages: [Stage]
    let features: [Feature]

    init(_ c: HaarCascade) {
        windowWidth = c.windowWidth
        windowHeight = c.windowHeight
        var nodes: [Node] = [], leaves: [Float] = [], classifiers: [Classifier] = [], stages: [Stage] = []
        for s in c.stages {
            stages.append(Stage(firstClassifier: classifiers.count, count: s.classifiers.count, threshold: s.threshold))
            for wc in s.classifiers {
                classifiers.append(Classifier(firstNode: Int32(nodes.count), firstLeaf: Int32(leaves.count)))
                for n in wc.nodes {
                    nodes.append(Node(left: Int32(n.left), right: Int32(n.right), feature: Int32(n.featureIndex), threshold: n.threshold))
                }
                leaves.append(contentsOf: wc.leaves)
            }
        }
        features = c.features.map { f in
            var v = [Int32](repeating: 0, count: 12)
            var w: [Float] = [0, 0, 0]
            for (i, r) in f.rects.prefix(3).enumerated() {
                v[i * 4] = Int32(r.x)
                v[i * 4 + 1] = Int32(r.y)
                v[i * 4 + 2] = Int32(r.width)
                v[i * 4 + 3] = Int32(r.height)
                w[i] = r.weight
            }
            return Feature(r: (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]), w: (w[0], w[1], w[2]))
        }
        self.nodes = nodes
        self.leaves = leaves
        self.classifiers = classifiers
        self.stages = stages
    }

    /// Pixel-sum offsets of each feature's rectangles in an integral image with row stride `s`.
    private struct Offsets {
        var o: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)
        var w: (Float, Float, Float)
    }

    private func offsets(stride s: Int) -> [Offsets] {
        features.map { f in
            func corners(_ x: Int32, _ y: Int32, _ w: Int32, _ h: Int32) -> (Int, Int, Int, Int) {
                let x = Int(x), y = Int(y), w = Int(w), h = Int(h)
                return (y * s + x, y * s + x + w, (y + h) * s + x, (y + h) * s + x + w)
            }
            let a = corners(f.r.0, f.r.1, f.r.2, f.r.3)
            let b = corners(f.r.4, f.r.5, f.r.6, f.r.7)
            let c = corners(f.r.8, f.r.9, f.r.10, f.r.11)
            return Offsets(o: (a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3, c.0, c.1, c.2, c.3), w: f.w)
        }
    }

    /// Runs the cascade on every window origin `(i·step, j·step)` for `i·step < xCount`,
    /// `j·step < yCount` of `image`; returns the accepted origins shifted by `(firstX, firstY)`.
    func scan(_ image: GrayImage, step: Int, xCount: Int, yCount: Int, firstX: Int, firstY: Int) -> [(Int, Int)] {
        var hits: [(Int, Int)] = []
        evaluate(image, step: step, xCount: xCount, yCount: yCount) { x, y, depth in
            if depth == stages.count { hits.append((x + firstX, y + firstY)) }
        }
        return hits
    }

    /// The largest number of stages passed by any window of the grid.
    func bestDepth(_ image: GrayImage, step: Int, xCount: Int, yCount: Int) -> Int {
        var best = 0
        evaluate(image, step: step, xCount: xCount, yCount: yCount) { _, _, depth in best = max(best, depth) }
        return best
    }

    private func evaluate(_ image: GrayImage, step: Int, xCount: Int, yCount: Int, _ report: (Int, Int, Int) -> Void) {
        let w = image.width, h = image.height, s = w + 1
        guard w >= windowWidth, h >= windowHeight else { return }
        // Integral image and squared integral image, (w+1)×(h+1) with a zero first row and column.
        var sum = [Int32](repeating: 0, count: s * (h + 1))
        var sq = [Int64](repeating: 0, count: s * (h + 1))
        image.pixels.withUnsafeBufferPointer { px in
            sum.withUnsafeMutableBufferPointer { S in
                sq.withUnsafeMutableBufferPointer { Q in
                    for y in 0..<h {
                        var rs: Int32 = 0
                        var rq: Int64 = 0
                        let row = (y + 1) * s, prev = y * s
                        for x in 0..<w {
                            let v = Int32(px[y * w + x])
                            rs += v
                            rq += Int64(v * v)
                            S[row + x + 1] = S[prev + x + 1] + rs
                            Q[row + x + 1] = Q[prev + x + 1] + rq
                        }
                    }
                }
            }
        }
        let offs = offsets(stride: s)
        // OpenCV normalises by the standard deviation over the window shrunk by one pixel.
        let nx = 1, ny = 1, nw = windowWidth - 2, nh = windowHeight - 2
        let n0 = ny * s + nx, n1 = ny * s + nx + nw, n2 = (ny + nh) * s + nx, n3 = (ny + nh) * s + nx + nw
        let normArea = Int64(nw * nh)
        let nStages = stages.count
        sum.withUnsafeBufferPointer { S in
            sq.withUnsafeBufferPointer { Q in
                offs.withUnsafeBufferPointer { F in
                    nodes.withUnsafeBufferPointer { N in
                        leaves.withUnsafeBufferPointer { L in
                            classifiers.withUnsafeBufferPointer { C in
                                stages.withUnsafeBufferPointer { ST in
                                    var y = 0
                                    while y < yCount && y + windowHeight <= h {
                                        var x = 0
                                        while x < xCount && x + windowWidth <= w {
                                            let o = y * s + x
                                            let ws = Int64(S[o + n0] - S[o + n1] - S[o + n2] + S[o + n3])
                                            let wq = Q[o + n0] - Q[o + n1] - Q[o + n2] + Q[o + n3]
                                            let v = normArea * wq - ws * ws
                                            let nf = v > 0 ? Float(Double(v).squareRoot()) : 1
                                            var depth = 0
                                            stageLoop: while depth < nStages {
                                                let st = ST[depth]
                                                var acc: Float = 0
                                                for ci in st.firstClassifier..<(st.firstClassifier + st.count) {
                                                    let c = C[ci]
                                                    var idx: Int32 = 0
                                                    repeat {
                                                        let node = N[Int(c.firstNode + idx)]
                                                        let f = F[Int(node.feature)]
                                                        let p = S.baseAddress! + o
                                                        var val = f.w.0 * Float(p[f.o.0] - p[f.o.1] - p[f.o.2] + p[f.o.3])
                                                        val += f.w.1 * Float(p[f.o.4] - p[f.o.5] - p[f.o.6] + p[f.o.7])
                                                        if f.w.2 != 0 { val += f.w.2 * Float(p[f.o.8] - p[f.o.9] - p[f.o.10] + p[f.o.11]) }
                                                        // feature / nf < threshold, without the division.
                                                        idx = val < node.threshold * nf ? node.left : node.right
                                                    } while idx > 0
                                                    acc += L[Int(c.firstLeaf - idx)]
                                                }
                                                if acc < st.threshold { break stageLoop }
                                                depth += 1
                                            }
                                            report(x, y, depth)
                                            x += step
                                        }
                                        y += step
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
