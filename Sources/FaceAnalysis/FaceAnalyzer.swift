import DubfarmCore
import Foundation

/// What was found about the face in one frame, before smoothing.
package struct FaceObservation: Sendable, Hashable {
    /// The face box, frame pixels. With landmarks: the box in dlib's convention re-fitted to the
    /// landmarks (see ``FaceAnalyzer``), grown where needed to enclose all 68 (the jaw line
    /// reaches past dlib's box); without landmarks, the detector's box.
    package var box: FaceBox
    /// The detector's own box (OpenCV convention: brow to lower lip, roughly).
    package var detectorBox: FaceBox
    /// The 68 landmarks (iBUG order), frame pixels; nil without the landmark model or when the
    /// observation was bridged over a detection miss.
    package var landmarks: [Point2]?
    /// The crop square: FFHQ from landmarks, or box-based.
    package var alignment: FaceAlignment
    /// Detector confidence (neighbour count); 0 for a bridged observation.
    package var neighbors: Int
}

/// Per-frame face analysis: detection (optionally near a previous box), landmarks and alignment.
///
/// Stateless apart from its models, so the same frame always gives the same observation for the
/// same `near` box, which keeps trajectories identical across segment borders.
package struct FaceAnalyzer: Sendable {
    package let detector: FaceDetector
    /// nil when the landmark model is absent: crops then come from ``FaceAlignment/fromBox(_:)``.
    package let predictor: ShapePredictor?

    package init(detector: FaceDetector, predictor: ShapePredictor?) {
        self.detector = detector
        self.predictor = predictor
    }

    /// Loads the cascade (required) and the landmark model (optional). A missing landmark model
    /// is reported once through `log` and the analyzer falls back to box-based crops; an
    /// unreadable or corrupt one is an error.
    package static func load(cascadePath: String = HaarCascade.defaultPath,
                            landmarkPath: String = ShapePredictor.defaultPath,
                            parameters: FaceDetector.Parameters = .init(),
                            log: (String) -> Void = { _ in }) throws -> FaceAnalyzer {
        let detector = try FaceDetector(cascadePath: cascadePath, parameters: parameters)
        var predictor: ShapePredictor?
        if FileManager.default.fileExists(atPath: landmarkPath) {
            predictor = try ShapePredictor(contentsOf: landmarkPath)
        } else {
            log("Landmark model \(landmarkPath) not found (install libdlib-data): face crops fall back to box-based squares without alignment.")
        }
        return FaceAnalyzer(detector: detector, predictor: predictor)
    }

    /// Analyses one frame. With `near`, the detector first searches around that box and falls back
    /// to the whole frame. Among several faces it takes the one overlapping `near` most, else the
    /// best supported.
    package func analyze(_ frame: VideoFrame, near: FaceBox? = nil) -> FaceObservation? {
        guard let best = detectFace(frame, near: near) else { return nil }
        return observe(frame, detectorBox: best.box, neighbors: best.neighbors)
    }

    /// The detection step of ``analyze(_:near:)`` alone (no landmarks): the face it would analyse.
    package func detectFace(_ frame: VideoFrame, near: FaceBox? = nil) -> FaceDetection? {
        let prepared = detector.prepare(frame)
        var found = near.map { detector.detect(inAnalysis: prepared, near: $0) } ?? []
        if found.isEmpty { found = detector.detect(inAnalysis: prepared) }
        guard var best = found.first else { return nil }
        if let n = near, let match = found.max(by: { $0.box.iou(n) < $1.box.iou(n) }), match.box.iou(n) > 0.2 {
            best = match
        }
        return best
    }

    /// Follows the face of the previous frame into `frame` without the detector: landmarks from
    /// the box the previous frame's landmarks imply (the box the landmark model wants, so one pass
    /// suffices), the detector box carried along with it. Nil when the face is lost: no landmark
    /// model or previous landmarks, the landmarks jumped in size or place, or no face-like pattern
    /// remains where the detector would look (``looksLikeFace(_:detectorBox:minStdDev:minStageDepth:)``).
    package func follow(_ frame: VideoFrame, from previous: FaceObservation,
                        minStdDev: Double = 8, minStageDepth: Double = 0.5) -> FaceObservation? {
        guard let predictor, let prev = previous.landmarks else { return nil }
        let from = predictor.impliedBox(for: prev)
        let lm = predictor.landmarks(in: frame, box: from)
        let box = predictor.impliedBox(for: lm)
        // Faces move a few pixels per frame; landmarks that jumped have lost the face.
        let k = box.width / max(from.width, 1)
        let moved = ((box.centerX - from.centerX) * (box.centerX - from.centerX)
                     + (box.centerY - from.centerY) * (box.centerY - from.centerY)).squareRoot()
        guard k > 0.85, k < 1.18, moved < 0.2 * from.width else { return nil }
        let d = previous.detectorBox
        let cx = box.centerX + (d.centerX - from.centerX) * k, cy = box.centerY + (d.centerY - from.centerY) * k
        let detectorBox = FaceBox(x: cx - d.width * k / 2, y: cy - d.height * k / 2, width: d.width * k, height: d.height * k)
        guard looksLikeFace(frame, detectorBox: detectorBox, minStdDev: minStdDev, minStageDepth: minStageDepth) else { return nil }
        return FaceObservation(box: Self.enclosing(box, lm), detectorBox: detectorBox, landmarks: lm,
                               alignment: .ffhq(landmarks: lm), neighbors: previous.neighbors)
    }

    /// Whether `frame` still shows a face-like pattern at `detectorBox` (frame pixels): luma
    /// standard deviation of at least `minStdDev` in the box, and at least `minStageDepth` of the
    /// cascade's stages passed near it (``FaceDetector/stageDepth(in:around:)``). Cheap: one
    /// pyramid level around the box.
    package func looksLikeFace(_ frame: VideoFrame, detectorBox box: FaceBox, minStdDev: Double, minStageDepth: Double) -> Bool {
        // stageDepth reads windows up to a quarter of the box away, each about the box's size.
        let a = detector.prepare(frame, around: box, margin: 0.6)
        let b = box.scaled(by: 1 / a.factor)
        let img = a.image
        let x0 = max(0, Int(b.x)), y0 = max(0, Int(b.y))
        let x1 = min(img.width, Int(b.maxX)), y1 = min(img.height, Int(b.maxY))
        guard x1 > x0 + 4, y1 > y0 + 4 else { return false }
        var s = 0.0, q = 0.0
        for y in y0..<y1 {
            for x in x0..<x1 {
                let v = Double(img.pixels[y * img.width + x])
                s += v
                q += v * v
            }
        }
        let n = Double((x1 - x0) * (y1 - y0))
        let sd = max(0, q / n - (s / n) * (s / n)).squareRoot()
        guard sd >= minStdDev else { return false }
        return detector.stageDepth(in: img, around: b) >= minStageDepth
    }

    /// `box` grown where needed to enclose every landmark.
    static func enclosing(_ box: FaceBox, _ landmarks: [Point2]) -> FaceBox {
        var x0 = box.x, y0 = box.y, x1 = box.maxX, y1 = box.maxY
        for p in landmarks {
            x0 = min(x0, p.x); y0 = min(y0, p.y); x1 = max(x1, p.x); y1 = max(y1, p.y)
        }
        return FaceBox(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }

    /// Landmarks and alignment for a face at `detectorBox`.
    package func observe(_ frame: VideoFrame, detectorBox: FaceBox, neighbors: Int) -> FaceObservation {
        guard let predictor else {
            return FaceObservation(box: detectorBox, detectorBox: detectorBox, landmarks: nil,
                                   alignment: .fromBox(detectorBox), neighbors: neighbors)
        }
        // dlib's model expects boxes from dlib's HOG detector, which sit lower and tighter than
        // OpenCV's Haar boxes. Run once on the Haar box, fit the mean shape to the result to get
        // the box the model would have wanted, and run again on that box.
        let first = predictor.landmarks(in: frame, box: detectorBox)
        let box = predictor.impliedBox(for: first)
        let lm = predictor.landmarks(in: frame, box: box)
        return FaceObservation(box: Self.enclosing(box, lm), detectorBox: detectorBox, landmarks: lm,
                               alignment: .ffhq(landmarks: lm), neighbors: neighbors)
    }
}

extension ShapePredictor {
    /// The box for which the model's mean shape best fits `landmarks` (least-squares similarity
    /// from the unit-box mean shape, its scale and translation applied to the unit square).
    package func impliedBox(for landmarks: [Point2]) -> FaceBox {
        let n = min(landmarks.count, landmarkCount)
        var mfx = 0.0, mfy = 0.0, mtx = 0.0, mty = 0.0
        for i in 0..<n {
            mfx += Double(initialShape[2 * i]); mfy += Double(initialShape[2 * i + 1])
            mtx += landmarks[i].x; mty += landmarks[i].y
        }
        let dn = Double(max(n, 1))
        mfx /= dn; mfy /= dn; mtx /= dn; mty /= dn
        var sf = 0.0, c00 = 0.0, c01 = 0.0, c10 = 0.0, c11 = 0.0
        for i in 0..<n {
            let fx = Double(initialShape[2 * i]) - mfx, fy = Double(initialShape[2 * i + 1]) - mfy
            let tx = landmarks[i].x - mtx, ty = landmarks[i].y - mty
            sf += fx * fx + fy * fy
            c00 += tx * fx; c01 += tx * fy; c10 += ty * fx; c11 += ty * fy
        }
        guard sf > 0 else { return FaceBox(x: mtx, y: mty, width: 1, height: 1) }
        let p = (c00 + c11) / sf, q = (c10 - c01) / sf
        // Scale of the fitted similarity; the rotation is dropped (boxes are upright).
        let scale = (p * p + q * q).squareRoot()
        // Unit-box coordinates span `side - 1` pixels (dlib's inclusive rectangles).
        let side = scale + 1
        let cx = mtx + scale * (0.5 - mfx), cy = mty + scale * (0.5 - mfy)
        return FaceBox(x: cx - scale / 2, y: cy - scale / 2, width: side, height: side)
    }
}
