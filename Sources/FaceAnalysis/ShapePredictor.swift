import DubfarmCore
import Foundation

/// dlib's `shape_predictor` (an ensemble of regression trees, Kazemi & Sullivan 2014) read from
/// dlib's own serialization format, e.g. `shape_predictor_68_face_landmarks.dat`, and evaluated
/// exactly as `dlib::shape_predictor::operator()` does.
package struct ShapePredictor: Sendable {
    /// One level of the cascade.
    struct Level: Sendable {
        /// Tree splits, `treeCount × splitsPerTree`, each (idx1, idx2, threshold).
        var splitIdx1: [Int32]
        var splitIdx2: [Int32]
        var splitThresh: [Float]
        /// Leaf shape deltas, `treeCount × leavesPerTree × shapeCount·2`.
        var leafValues: [Float]
        var treeCount: Int
        var splitsPerTree: Int
        /// Feature pixels: anchor landmark and offset in the normalised shape space.
        var anchor: [Int32]
        var deltaX: [Float]
        var deltaY: [Float]
    }

    /// The mean shape in the unit box, interleaved x, y.
    let initialShape: [Float]
    let levels: [Level]

    /// Number of landmarks (68 for the iBUG 300-W model).
    package var landmarkCount: Int { initialShape.count / 2 }

    /// The default location of the Debian `libdlib-data` 68-landmark model.
    package static let defaultPath = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"

    /// Loads a model file; throws a ``DubfarmError`` naming the file and the reason.
    package init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DubfarmError(.notFound, "Cannot read the landmark model \(path): the file is missing or unreadable.")
        }
        try self.init(serialized: [UInt8](data), name: path)
    }

    /// Parses dlib's serialization of a `shape_predictor`; `name` is used in error messages.
    package init(serialized bytes: [UInt8], name: String = "shape predictor") throws {
        var r = DlibReader(bytes: bytes, name: name)
        let version = try r.int()
        guard version == 1 else {
            throw DubfarmError(.unsupported, "The landmark model \(name) has serialization version \(version); only 1 is supported.")
        }
        let initial = try r.floatColumn()
        guard !initial.isEmpty, initial.count % 2 == 0 else { throw r.failure("invalid initial shape") }
        let shapeLen = initial.count
        // forests: vector<vector<regression_tree>>; tree = vector<split_feature>, vector<matrix<float,0,1>>.
        let levelCount = try r.count(max: 1000)
        var levels: [Level] = []
        levels.reserveCapacity(levelCount)
        for _ in 0..<levelCount {
            let trees = try r.count(max: 100_000)
            var l = Level(splitIdx1: [], splitIdx2: [], splitThresh: [], leafValues: [], treeCount: trees, splitsPerTree: 0,
                          anchor: [], deltaX: [], deltaY: [])
            for t in 0..<trees {
                let splits = try r.count(max: 1 << 20)
                if t == 0 {
                    l.splitsPerTree = splits
                    l.splitIdx1.reserveCapacity(trees * splits)
                    l.splitIdx2.reserveCapacity(trees * splits)
                    l.splitThresh.reserveCapacity(trees * splits)
                    l.leafValues.reserveCapacity(trees * (splits + 1) * shapeLen)
                } else if splits != l.splitsPerTree {
                    throw r.failure("trees of one level differ in depth")
                }
                for _ in 0..<splits {
                    l.splitIdx1.append(Int32(try r.int()))
                    l.splitIdx2.append(Int32(try r.int()))
                    l.splitThresh.append(try r.float())
                }
                let leaves = try r.count(max: 1 << 21)
                guard leaves == splits + 1 else { throw r.failure("a tree has \(leaves) leaves for \(splits) splits") }
                for _ in 0..<leaves {
                    try r.floatColumn(into: &l.leafValues, expected: shapeLen)
                }
            }
            levels.append(l)
        }
        let anchorLevels = try r.count(max: 1000)
        guard anchorLevels == levelCount else { throw r.failure("anchor table has \(anchorLevels) levels, forests \(levelCount)") }
        for i in 0..<levelCount {
            let n = try r.count(max: 1 << 20)
            for _ in 0..<n {
                let a = try r.int()
                guard a >= 0, a < shapeLen / 2 else { throw r.failure("anchor index \(a) out of range") }
                levels[i].anchor.append(Int32(a))
            }
        }
        let deltaLevels = try r.count(max: 1000)
        guard deltaLevels == levelCount else { throw r.failure("delta table has \(deltaLevels) levels, forests \(levelCount)") }
        for i in 0..<levelCount {
            let n = try r.count(max: 1 << 20)
            guard n == levels[i].anchor.count else { throw r.failure("level \(i) has \(n) deltas and \(levels[i].anchor.count) anchors") }
            for _ in 0..<n {
                levels[i].deltaX.append(try r.float())
                levels[i].deltaY.append(try r.float())
            }
            let features = n
            for k in 0..<levels[i].splitIdx1.count
            where Int(levels[i].splitIdx1[k]) >= features || Int(levels[i].splitIdx2[k]) >= features || levels[i].splitIdx1[k] < 0 || levels[i].splitIdx2[k] < 0 {
                throw r.failure("level \(i) has a split on a feature out of range")
            }
        }
        initialShape = initial
        self.levels = levels
    }

    /// The landmarks of the face in `box` (frame coordinates), as dlib computes them: start from
    /// the mean shape mapped into the box, then for each cascade level sample the feature pixels
    /// (intensity `(R+G+B)/3` for rgb24, luma for yuv420p; 0 outside the frame) and add the
    /// leaves of every tree.
    ///
    /// dlib rounds the result to integer pixels; this returns the unrounded points.
    package func landmarks(in frame: VideoFrame, box: FaceBox) -> [Point2] {
        let sampler = IntensitySampler(frame)
        // dlib's rectangle is inclusive: right = left + width - 1.
        let left = box.x.rounded(), top = box.y.rounded()
        let bw = (box.width.rounded() - 1), bh = (box.height.rounded() - 1)
        var shape = initialShape
        let n = shape.count
        var features: [Float] = []
        for level in levels {
            // Similarity (rotation + scale only) taking the mean shape to the current one.
            let (m00, m01, m10, m11) = ShapePredictor.similarity(from: initialShape, to: shape)
            let count = level.anchor.count
            features = [Float](repeating: 0, count: count)
            for i in 0..<count {
                let a = Int(level.anchor[i])
                let dx = level.deltaX[i], dy = level.deltaY[i]
                let ux = m00 * dx + m01 * dy + shape[2 * a]
                let uy = m10 * dx + m11 * dy + shape[2 * a + 1]
                // dlib converts to integer points with floor(v + 0.5).
                let px = (left + Double(ux) * bw + 0.5).rounded(.down)
                let py = (top + Double(uy) * bh + 0.5).rounded(.down)
                features[i] = sampler.intensity(Int(px), Int(py))
            }
            let spt = level.splitsPerTree, leafStride = n
            level.splitIdx1.withUnsafeBufferPointer { i1 in
                level.splitIdx2.withUnsafeBufferPointer { i2 in
                    level.splitThresh.withUnsafeBufferPointer { th in
                        level.leafValues.withUnsafeBufferPointer { lv in
                            features.withUnsafeBufferPointer { fv in
                                shape.withUnsafeMutableBufferPointer { sh in
                                    for t in 0..<level.treeCount {
                                        let base = t * spt
                                        var i = 0
                                        while i < spt {
                                            let k = base + i
                                            i = fv[Int(i1[k])] - fv[Int(i2[k])] > th[k] ? 2 * i + 1 : 2 * i + 2
                                        }
                                        let leaf = (t * (spt + 1) + (i - spt)) * leafStride
                                        for j in 0..<n { sh[j] += lv[leaf + j] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (0..<(n / 2)).map { i in
            Point2(left + Double(shape[2 * i]) * bw, top + Double(shape[2 * i + 1]) * bh)
        }
    }

    /// The 2×2 part of the least-squares similarity transform taking `from` onto `to` (Umeyama;
    /// for 2-D the SVD solution has this closed form), cast to Float as dlib does.
    static func similarity(from: [Float], to: [Float]) -> (Float, Float, Float, Float) {
        let n = from.count / 2
        var mfx = 0.0, mfy = 0.0, mtx = 0.0, mty = 0.0
        for i in 0..<n {
            mfx += Double(from[2 * i])
            mfy += Double(from[2 * i + 1])
            mtx += Double(to[2 * i])
            mty += Double(to[2 * i + 1])
        }
        let dn = Double(n)
        mfx /= dn; mfy /= dn; mtx /= dn; mty /= dn
        var sigmaFrom = 0.0, c00 = 0.0, c01 = 0.0, c10 = 0.0, c11 = 0.0
        for i in 0..<n {
            let fx = Double(from[2 * i]) - mfx, fy = Double(from[2 * i + 1]) - mfy
            let tx = Double(to[2 * i]) - mtx, ty = Double(to[2 * i + 1]) - mty
            sigmaFrom += fx * fx + fy * fy
            c00 += tx * fx
            c01 += tx * fy
            c10 += ty * fx
            c11 += ty * fy
        }
        guard sigmaFrom > 0 else { return (1, 0, 0, 1) }
        // c·R = [[p, -q], [q, p]] with p = (c00 + c11)/σ, q = (c10 - c01)/σ (covariances / n cancel).
        let p = (c00 + c11) / sigmaFrom, q = (c10 - c01) / sigmaFrom
        return (Float(p), Float(-q), Float(q), Float(p))
    }
}

/// dlib's `get_pixel_intensity` on a frame: `(R+G+B)/3` (integer division) for rgb24, Y for yuv420p.
struct IntensitySampler {
    let frame: VideoFrame
    init(_ frame: VideoFrame) { self.frame = frame }

    @inline(__always)
    func intensity(_ x: Int, _ y: Int) -> Float {
        guard x >= 0, y >= 0, x < frame.width, y < frame.height else { return 0 }
        let s = frame.strides[0]
        switch frame.layout {
        case .rgb24:
            let o = y * s + x * 3
            let p = frame.planes[0]
            return Float((Int(p[o]) + Int(p[o + 1]) + Int(p[o + 2])) / 3)
        case .yuv420p:
            return Float(frame.planes[0][y * s + x])
        }
    }
}

/// Reader for dlib's portable serialization: integers as a control byte (bit 7 = negative,
/// low 4 bits = byte count) then little-endian magnitude bytes; floats as (int64 mantissa,
/// int16 exponent) meaning `mantissa · 2^exponent`; column matrices as `-rows, -cols` then values.
struct DlibReader {
    let bytes: [UInt8]
    let name: String
    var pos = 0

    func failure(_ why: String) -> DubfarmError {
        DubfarmError(.badInput, "The landmark model \(name) is not a dlib shape predictor: \(why) (at byte \(pos)).")
    }

    @inline(__always)
    mutating func int() throws -> Int {
        guard pos < bytes.count else { throw failure("unexpected end of file") }
        let control = bytes[pos]
        let size = Int(control & 0x0F)
        guard size <= 8, pos + 1 + size <= bytes.count else { throw failure("bad integer") }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(bytes[pos + 1 + i]) << (8 * UInt64(i)) }
        pos += 1 + size
        guard v <= UInt64(Int.max) else { throw failure("integer overflow") }
        return control & 0x80 != 0 ? -Int(v) : Int(v)
    }

    mutating func count(max: Int) throws -> Int {
        let n = try int()
        guard n >= 0, n <= max else { throw failure("implausible count \(n)") }
        return n
    }

    @inline(__always)
    mutating func float() throws -> Float {
        let mantissa = try int()
        let exponent = try int()
        switch exponent {
        case 32000: return .infinity
        case 32001: return -.infinity
        case 32002: return .nan
        default: return Float(Double(sign: .plus, exponent: exponent, significand: Double(mantissa)))
        }
    }

    mutating func floatColumn() throws -> [Float] {
        var out: [Float] = []
        try floatColumn(into: &out, expected: nil)
        return out
    }

    mutating func floatColumn(into out: inout [Float], expected: Int?) throws {
        var rows = try int(), cols = try int()
        // Old dlib wrote positive sizes; current dlib writes them negated.
        rows = abs(rows)
        cols = abs(cols)
        guard cols == 1 || rows == 0, rows <= 1 << 20 else { throw failure("expected a column vector, got \(rows)×\(cols)") }
        if let e = expected, rows != e { throw failure("expected \(e) values, got \(rows)") }
        for _ in 0..<(rows * cols) { out.append(try float()) }
    }
}
