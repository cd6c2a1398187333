@testable import FaceAnalysis
import DubfarmCore
import FarmTestSupport
import Foundation
import MediaPipeline
import Testing

/// Our ports against the libraries they re-implement: OpenCV 4.12's `CascadeClassifier` and
/// dlib 20's `shape_predictor`, run by `tools/face-fixtures/make_fixtures.py` on 18 frames of the
/// test media (13 clips and the still; 224–896 px, square and 360×288; H.264, MPEG-4, MPEG-1,
/// full-range and BT.709-tagged streams, PNG) and recorded in `Fixtures/library_reference.json`.
/// The frames are decoded here by our own decoder, as the dub stage decodes them (rgb24); each
/// stage's input is checked by checksum first, so a failure says which stage differs.
///
/// What must agree, and why that much (measured on the fixture, 2026-12: everything exact except
/// the grouped detector boxes, IoU 0.938–0.989, median 0.974):
/// - **Inputs**, exactly: rgb24 pixels (ffmpeg with our swscale flags), the grey image
///   (`cvtColor(RGB2GRAY)`) and the 320-px analysis image (`resize(INTER_AREA)`). All three are
///   deterministic, rounded computations; any difference is a bug, not noise.
/// - **The cascade alone**, exactly: on one level of OpenCV's own pixels (no resampling, no
///   grouping), the windows we accept in OpenCV's scan order (``openCVScan``: it skips the window
///   after one rejected by stage 0) are the windows OpenCV accepts. Our detector itself evaluates
///   every window on the grid, so it may accept a few more (reported).
/// - **The detector** (`detectMultiScale2` with our defaults): every OpenCV face is found with
///   IoU ≥ 0.9, and our best-supported face (the one ``FaceAnalyzer`` takes) is OpenCV's first.
///   Not exact by design (``FaceDetector``): our pyramid levels are area-averaged where OpenCV's
///   are bilinear, and we also evaluate the windows OpenCV skips, so the raw windows differ a
///   little (neighbour counts −5…+19 here) and their average moves by a few pixels. IoU 0.9 on a
///   ~115-px face (the smallest here) allows a shift of ~3 px on both axes, or 5% in size.
///   For the same reason a group OpenCV leaves just under `minNeighbors` can just pass with us:
///   a face OpenCV does not report is allowed if it has at most 2 × `minNeighbors` neighbours
///   (speaker-a frame 70: a neck-level window with 4 for us, 1 raw window for OpenCV).
/// - **Landmarks** (the same integer box given to both, from OpenCV's detection and from dlib's
///   HOG detector): after rounding ours as dlib does (`floor(v + 0.5)`), at least 99% of the
///   points equal dlib's and none is more than 1 px off (measured: all equal). The trees compare
///   integer pixel intensities, so the result is exact unless a feature pixel lands on a rounding
///   tie (dlib computes the similarity transform in float by SVD, we in closed form in double).
@Suite struct LibraryAgreementTests {
    struct Reference: Decodable {
        struct Analysis: Decodable {
            var width, height: Int
            var fnv: String
            var min_size: Int
            var faces: [[Int]]
            var neighbors: [Int]
        }
        struct Raw: Decodable {
            var width, height: Int
            /// base64 grey pixels, rows packed.
            var pixels: String
            var origins: [[Int]]
        }
        struct Landmarks: Decodable {
            var box_from: String
            var box: [Int]
            var points: [Int]
        }
        struct Frame: Decodable {
            var file: String
            var frame: Int
            var width, height: Int
            var rgb_fnv: String
            var grey_fnv: String
            var analysis: Analysis
            var raw: Raw?
            var landmarks: [Landmarks]
        }
        var versions: [String: String]
        var cascade: String
        var landmark_model: String
        /// r, g, b, cvtColor's grey; flat.
        var grey_samples: [Int]
        var frames: [Frame]
    }

    static let reference: Reference? = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/library_reference.json")
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(Reference.self, from: data)
    }()

    static let mediaReady = reference != nil && TestModels.faceReady
        && FileManager.default.fileExists(atPath: TestMedia.path("train"))

    /// 64-bit FNV-1a, as the script computes it, over the rows of a frame's first plane or of an image.
    static func fnv(_ rows: Int, _ rowBytes: Int, _ stride: Int, _ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for y in 0..<rows {
            for x in 0..<rowBytes {
                h = (h ^ UInt64(bytes[y * stride + x])) &* 0x100_0000_01B3
            }
        }
        return String(format: "%016llx", h)
    }
    static func fnv(_ f: VideoFrame) -> String { fnv(f.height, f.width * 3, f.strides[0], f.planes[0]) }
    static func fnv(_ g: GrayImage) -> String { fnv(g.height, g.width, g.width, g.pixels) }

    /// Frame `index` of `file` (under the test media), decoded by our decoder as the dub stage does (rgb24).
    static func decode(_ file: String, _ index: Int) throws -> VideoFrame {
        let path = TestMedia.path(file)
        if file.hasSuffix(".png") { return try TestMedia.image(path) }
        var found: VideoFrame?
        try TestMedia.forEachFrame(path, limit: index + 1) { if $0.index == index { found = $0 } }
        guard let found else { throw DubfarmError(.badInput, "\(file) has no frame \(index)") }
        return found
    }

    static func f3(_ v: Double) -> String { String(format: "%.3f", v) }

    static func box(_ v: [Int]) -> FaceBox {
        FaceBox(x: Double(v[0]), y: Double(v[1]), width: Double(v[2]), height: Double(v[3]))
    }

    /// `cvtColor(RGB2GRAY)` on 400 random colours, exactly (needs no media).
    @Test(.enabled(if: reference != nil, "needs Fixtures/library_reference.json"))
    func greyConversionIsCvtColors() throws {
        let s = try #require(Self.reference).grey_samples
        let n = s.count / 4
        let frame = VideoFrame(width: n, height: 1, layout: .rgb24,
                               planes: [(0..<n).flatMap { i in (0..<3).map { UInt8(s[4 * i + $0]) } }], strides: [3 * n], index: 0)
        let grey = GrayImage(luma: frame)
        let wrong = (0..<n).filter { Int(grey.pixels[$0]) != s[4 * $0 + 3] }
        #expect(wrong.isEmpty, "\(wrong.count)/\(n) colours differ, e.g. rgb \(wrong.first.map { Array(s[4 * $0..<4 * $0 + 3]) } ?? [])")
    }

    /// The windows OpenCV's `detectMultiScale` evaluates on one level, in its order: rows and
    /// columns on a 2-px grid (`x < width − 24`, `y < height − 24`), skipping the next window
    /// after one rejected by stage 0. Returns the accepted origins and all accepted on the grid.
    static func openCVScan(_ c: CompiledCascade, _ img: GrayImage) -> (opencv: Set<[Int]>, all: Set<[Int]>) {
        let ww = c.windowWidth, wh = c.windowHeight
        func depth(_ x: Int, _ y: Int) -> Int {
            // The features and the variance normalisation are window-local: a crop evaluates the same.
            var px = [UInt8](repeating: 0, count: ww * wh)
            for r in 0..<wh { for q in 0..<ww { px[r * ww + q] = img.pixels[(y + r) * img.width + x + q] } }
            return c.bestDepth(GrayImage(width: ww, height: wh, pixels: px), step: 1, xCount: 1, yCount: 1)
        }
        var opencv = Set<[Int]>(), all = Set<[Int]>()
        for y in stride(from: 0, to: img.height - wh, by: 2) {
            var x = 0
            var skipNext = false
            while x < img.width - ww {
                let d = depth(x, y)
                if d == c.stages.count {
                    all.insert([x, y])
                    if !skipNext { opencv.insert([x, y]) }
                }
                // OpenCV: `if (result == 0) x += yStep` — only for a window it evaluated.
                skipNext = !skipNext && d == 0
                x += 2
            }
        }
        return (opencv, all)
    }

    @Test(.enabled(if: mediaReady, "needs ../shared/media (with train/), opencv-data and libdlib-data"))
    func agreesWithOpenCVAndDlib() throws {
        let ref = try #require(Self.reference)
        #expect(ref.cascade == HaarCascade.defaultPath)
        #expect(ref.landmark_model == ShapePredictor.defaultPath)
        let analyzer = TestModels.analyzer
        let detector = analyzer.detector
        let predictor = try #require(analyzer.predictor)
        let compiled = CompiledCascade(detector.cascade)

        var extras: [String] = []
        var minIoU = 1.0, ious: [Double] = [], neighbourDiffs: [Int] = []
        var rawRef = 0, rawMismatch = 0, rawSkipped = 0
        var points = 0, exact = 0, maxErr = 0, sumErr = 0.0, sumErrUnrounded = 0.0
        var inputsOK = 0
        for f in ref.frames {
            let what = "\(f.file)#\(f.frame)"
            let frame = try Self.decode(f.file, f.frame)
            try #require(frame.width == f.width && frame.height == f.height, "\(what): size")
            // Inputs, stage by stage.
            let pixelsOK = Self.fnv(frame) == f.rgb_fnv
            #expect(pixelsOK, "\(what): our decoder's rgb24 differs from ffmpeg's")
            let grey = GrayImage(luma: frame)
            #expect(Self.fnv(grey) == f.grey_fnv, "\(what): GrayImage(luma:) differs from cvtColor(RGB2GRAY)")
            let prepared = detector.prepare(frame)
            let a = prepared.image
            #expect(a.width == f.analysis.width && a.height == f.analysis.height, "\(what): analysis size \(a.width)x\(a.height)")
            let analysisOK = Self.fnv(a) == f.analysis.fnv
            #expect(analysisOK, "\(what): the analysis image differs from resize(INTER_AREA)")
            if pixelsOK && analysisOK { inputsOK += 1 }

            // The cascade alone on one level, on OpenCV's own pixels.
            if let raw = f.raw {
                let bytes = try #require(Data(base64Encoded: raw.pixels))
                let level = GrayImage(width: raw.width, height: raw.height, pixels: [UInt8](bytes))
                let (ours, all) = Self.openCVScan(compiled, level)
                let refSet = Set(raw.origins)
                rawRef += refSet.count
                rawMismatch += refSet.symmetricDifference(ours).count
                rawSkipped += all.subtracting(ours).count
                #expect(ours == refSet, "\(what): OpenCV accepts \(refSet.sorted { $0.lexicographicallyPrecedes($1) }), we \(ours.sorted { $0.lexicographicallyPrecedes($1) })")
            }

            // The detector, grouped, in analysis pixels.
            let found = detector.detect(in: a)
            for (i, r) in f.analysis.faces.enumerated() {
                let rb = Self.box(r)
                guard let best = found.max(by: { $0.box.iou(rb) < $1.box.iou(rb) }) else {
                    Issue.record("\(what): we find no face, OpenCV \(rb)")
                    continue
                }
                let iou = best.box.iou(rb)
                ious.append(iou)
                minIoU = min(minIoU, iou)
                neighbourDiffs.append(best.neighbors - f.analysis.neighbors[i])
                print("\(what): OpenCV \(rb) n=\(f.analysis.neighbors[i]), ours \(best.box) n=\(best.neighbors), IoU \(Self.f3(iou))")
                #expect(iou >= 0.9, "\(what): IoU \(iou) with OpenCV's \(rb)")
            }
            // The face the analyzer takes (most neighbours) is OpenCV's first.
            if let top = found.first, let r = f.analysis.faces.first {
                #expect(top.box.iou(Self.box(r)) >= 0.9, "\(what): our best face \(top.box), OpenCV's \(r)")
            }
            for extra in found where !f.analysis.faces.contains(where: { Self.box($0).iou(extra.box) >= 0.5 }) {
                extras.append("\(what): \(extra.box) n=\(extra.neighbors)")
                #expect(extra.neighbors <= 2 * detector.parameters.minNeighbors,
                        "\(what): we find a face OpenCV does not, \(extra.box) with \(extra.neighbors) neighbours")
            }

            // Landmarks on the same boxes.
            for l in f.landmarks {
                let lm = predictor.landmarks(in: frame, box: Self.box(l.box))
                try #require(lm.count * 2 == l.points.count)
                var frameMax = 0, frameExact = 0
                for (i, p) in lm.enumerated() {
                    let rx = Int((p.x + 0.5).rounded(.down)), ry = Int((p.y + 0.5).rounded(.down))
                    let dx = abs(rx - l.points[2 * i]), dy = abs(ry - l.points[2 * i + 1])
                    frameMax = max(frameMax, dx, dy)
                    if dx == 0 && dy == 0 { frameExact += 1 }
                    sumErr += Double(dx * dx + dy * dy).squareRoot()
                    sumErrUnrounded += (p - Point2(Double(l.points[2 * i]), Double(l.points[2 * i + 1]))).length
                }
                points += lm.count
                exact += frameExact
                maxErr = max(maxErr, frameMax)
                if frameExact != lm.count {
                    print("\(what) (\(l.box_from) box \(l.box)): \(frameExact)/\(lm.count) landmarks equal dlib's, max \(frameMax) px off")
                }
                #expect(frameMax <= 1, "\(what) (\(l.box_from) box): a landmark is \(frameMax) px from dlib's")
            }
        }
        #expect(points > 0 && Double(exact) >= 0.99 * Double(points), "only \(exact)/\(points) landmarks equal dlib's")
        let mean = sumErr / Double(max(points, 1)), meanUnrounded = sumErrUnrounded / Double(max(points, 1))
        print("""
            LibraryAgreement vs OpenCV \(ref.versions["opencv"] ?? "?") / dlib \(ref.versions["dlib"] ?? "?") on \(ref.frames.count) frames \
            (\(inputsOK) with identical inputs): detector IoU min \(Self.f3(minIoU)) median \(Self.f3(median(ious))), \
            neighbour difference \(neighbourDiffs.min() ?? 0)…\(neighbourDiffs.max() ?? 0), \
            \(extras.count) weak extra face(s) \(extras); \
            cascade alone: \(rawRef) windows accepted by OpenCV, \(rawMismatch) differ \
            (our full grid accepts \(rawSkipped) more that OpenCV skips); \
            landmarks: \(exact)/\(points) equal after rounding, max \(maxErr) px, mean \(Self.f3(mean)) px (unrounded \(Self.f3(meanUnrounded)) px)
            """)
    }
}
