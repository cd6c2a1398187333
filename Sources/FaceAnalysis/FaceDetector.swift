import DubfarmCore
import Foundation

/// A face found by the detector.
package struct FaceDetection: Sendable, Hashable {
    /// The face box in the coordinates of the image passed to the detector.
    package var box: FaceBox
    /// Confidence: how many raw detections were grouped into this one (OpenCV's neighbour count).
    package var neighbors: Int
}

/// Multi-scale sliding-window face detection with a ``HaarCascade``, evaluated as OpenCV's
/// `CascadeClassifier::detectMultiScale` does (image pyramid, window of the cascade's size at
/// every scale, variance-normalised features, `groupRectangles` with `minNeighbors`).
///
/// Differences from OpenCV, chosen for speed and determinism:
/// - frames are first shrunk to ``Parameters/analysisSide`` on their longer side (area
///   averaging); boxes are scaled back to frame coordinates;
/// - pyramid levels are area-averaged, not bilinear;
/// - every window on the step grid is evaluated (OpenCV skips the next window after a stage-0
///   rejection), so a search restricted to a region returns exactly what a full search returns
///   for the faces inside that region.
package struct FaceDetector: Sendable {
    /// Detection parameters.
    package struct Parameters: Sendable, Hashable {
        /// Pyramid step (OpenCV's `scaleFactor`).
        package var scaleFactor: Double = 1.1
        /// Groups with this many or fewer raw detections are dropped (OpenCV's `minNeighbors`).
        package var minNeighbors: Int = 3
        /// Grouping tolerance (OpenCV's `eps` in `groupRectangles`, 0.2 in `detectMultiScale`).
        package var groupEps: Double = 0.2
        /// Frames are shrunk so that their longer side is at most this many pixels before detection.
        package var analysisSide: Int = 320
        /// Smallest face searched for, as a fraction of the shorter side of the analysed image.
        package var minFaceFraction: Double = 0.15
        package init() {}
    }

    package let cascade: HaarCascade
    package var parameters: Parameters
    private let compiled: CompiledCascade

    package init(cascade: HaarCascade, parameters: Parameters = Parameters()) {
        self.cascade = cascade
        self.parameters = parameters
        self.compiled = CompiledCascade(cascade)
    }

    /// Loads the cascade at `path` (default: the `opencv-data` frontal-face cascade).
    package init(cascadePath: String = HaarCascade.defaultPath, parameters: Parameters = Parameters()) throws {
        self.init(cascade: try HaarCascade(contentsOf: cascadePath), parameters: parameters)
    }

    /// Faces in a frame, in frame pixel coordinates, most neighbours first.
    ///
    /// - Parameters:
    ///   - near: when given (frame coordinates), only faces whose box lies within this box grown
    ///     by 0.35 of its size on each side, and of 0.75–1.35× its size, are searched for.
    package func detect(in frame: VideoFrame, near: FaceBox? = nil) -> [FaceDetection] {
        let prepared = prepare(frame)
        return detect(inAnalysis: prepared, near: near)
    }

    /// A frame shrunk for analysis, with the factor to map boxes back.
    package struct AnalysisImage: Sendable {
        package var image: GrayImage
        /// frame pixels per analysis pixel.
        package var factor: Double
    }

    /// Shrinks and converts a frame for ``detect(inAnalysis:near:)``.
    package func prepare(_ frame: VideoFrame) -> AnalysisImage {
        let (img, f) = GrayImage(luma: frame).downscaled(maxSide: parameters.analysisSide)
        return AnalysisImage(image: img, factor: f)
    }

    /// ``prepare(_:)`` computed only around `box` (frame pixels, grown by `margin` of its size on
    /// each side): the analysis image has the full analysis size, its pixels there equal
    /// ``prepare(_:)``'s and are zero elsewhere. For checks that read only near one face.
    package func prepare(_ frame: VideoFrame, around box: FaceBox, margin: Double) -> AnalysisImage {
        let size = GrayImage.downscaledSize(width: frame.width, height: frame.height, maxSide: parameters.analysisSide)
        let b = box.scaled(by: 1 / size.factor)
        let x0 = max(0, Int((b.x - margin * b.width).rounded(.down))), y0 = max(0, Int((b.y - margin * b.height).rounded(.down)))
        let x1 = min(size.width, Int((b.maxX + margin * b.width).rounded(.up))), y1 = min(size.height, Int((b.maxY + margin * b.height).rounded(.up)))
        guard x1 > x0, y1 > y0 else { return AnalysisImage(image: GrayImage(width: size.width, height: size.height, pixels: [UInt8](repeating: 0, count: size.width * size.height)), factor: size.factor) }
        // The frame pixels the area filter reads for that region (its taps span under 2 + factor pixels).
        let sx = Double(frame.width) / Double(size.width), sy = Double(frame.height) / Double(size.height)
        let luma = GrayImage(luma: frame, columns: Int(Double(x0) * sx) - 2..<Int(Double(x1) * sx) + 3,
                             rows: Int(Double(y0) * sy) - 2..<Int(Double(y1) * sy) + 3)
        guard size.factor != 1 else { return AnalysisImage(image: luma, factor: 1) }
        let part = luma.resizedArea(to: size.width, size.height, region: (x0, y0, x1 - x0, y1 - y0))
        var pixels = [UInt8](repeating: 0, count: size.width * size.height)
        for y in 0..<part.height {
            let row = (y0 + y) * size.width + x0
            for x in 0..<part.width { pixels[row + x] = part.pixels[y * part.width + x] }
        }
        return AnalysisImage(image: GrayImage(width: size.width, height: size.height, pixels: pixels), factor: size.factor)
    }

    /// Detection on a prepared image; boxes in frame coordinates.
    package func detect(inAnalysis a: AnalysisImage, near: FaceBox? = nil) -> [FaceDetection] {
        let roi = near.map { $0.scaled(by: 1 / a.factor) }
        return detect(in: a.image, near: roi).map {
            FaceDetection(box: $0.box.scaled(by: a.factor), neighbors: $0.neighbors)
        }
    }

    /// Detection on a grayscale image at its own resolution; boxes in its coordinates.
    package func detect(in image: GrayImage, near: FaceBox? = nil) -> [FaceDetection] {
        let ww = cascade.windowWidth, wh = cascade.windowHeight
        let minSide = max(Double(ww), parameters.minFaceFraction * Double(min(image.width, image.height)))
        var sizeRange = minSide...Double.greatestFiniteMagnitude
        var region: (x0: Double, y0: Double, x1: Double, y1: Double)?
        if let n = near {
            let side = max(n.width, n.height)
            // Wide enough that every raw window grouped into the face (eps 0.2) is searched, so
            // the result equals the full search's for that face.
            sizeRange = max(minSide, 0.75 * side)...max(minSide, 1.35 * side)
            let m = 0.35
            region = (n.x - m * n.width, n.y - m * n.height, n.maxX + m * n.width, n.maxY + m * n.height)
        }
        var raw: [FaceBox] = []
        var factor = 1.0
        while true {
            defer { factor *= parameters.scaleFactor }
            let winW = (Double(ww) * factor).rounded(), winH = (Double(wh) * factor).rounded()
            let sw = Int((Double(image.width) / factor).rounded()), sh = Int((Double(image.height) / factor).rounded())
            if sw - ww <= 0 || sh - wh <= 0 { break }
            if winW > sizeRange.upperBound { break }
            if winW < sizeRange.lowerBound { continue }
            // As OpenCV: two pixels of the level for small windows, one above factor 2.
            let step = factor > 2 ? 1 : 2
            // Window origins on the step grid, in scaled-image pixels.
            var xs = 0, xe = sw - ww, ys = 0, ye = sh - wh   // [xs, xe) etc.
            if let r = region {
                xs = max(0, Int((r.x0 / factor).rounded(.down)))
                ys = max(0, Int((r.y0 / factor).rounded(.down)))
                xe = min(xe, Int((r.x1 / factor).rounded(.up)) - ww + 1)
                ye = min(ye, Int((r.y1 / factor).rounded(.up)) - wh + 1)
                xs = (xs + step - 1) / step * step
                ys = (ys + step - 1) / step * step
                if xs >= xe || ys >= ye { continue }
            }
            // Scaled pixels needed: windows [xs, xe + ww), [ys, ye + wh).
            let sub = image.resizedArea(to: sw, sh, region: (xs, ys, xe - xs + ww - 1, ye - ys + wh - 1))
            let hits = compiled.scan(sub, step: step, xCount: xe - xs, yCount: ye - ys, firstX: xs, firstY: ys)
            for (x, y) in hits {
                raw.append(FaceBox(x: (Double(x) * factor).rounded(), y: (Double(y) * factor).rounded(), width: winW, height: winH))
            }
        }
        return groupRectangles(raw, groupThreshold: parameters.minNeighbors, eps: parameters.groupEps)
            .sorted { $0.neighbors > $1.neighbors || ($0.neighbors == $1.neighbors && $0.box.area > $1.box.area) }
    }

    /// The fraction of cascade stages (0...1) passed by the best window near `box` (analysis
    /// coordinates): windows of the pyramid level closest to the box size, within a quarter of
    /// the box size of its position. A cheap "is there still a face-like pattern here" check.
    package func stageDepth(in image: GrayImage, around box: FaceBox) -> Double {
        let ww = Double(cascade.windowWidth)
        var factor = 1.0
        while factor * parameters.scaleFactor * ww <= box.width { factor *= parameters.scaleFactor }
        if abs(factor * parameters.scaleFactor * ww - box.width) < abs(factor * ww - box.width) { factor *= parameters.scaleFactor }
        let sw = Int((Double(image.width) / factor).rounded()), sh = Int((Double(image.height) / factor).rounded())
        let w = cascade.windowWidth, h = cascade.windowHeight
        guard sw > w, sh > h else { return 0 }
        let r = 0.25 * box.width / factor
        let cx = box.x / factor, cy = box.y / factor
        let xs = max(0, Int(cx - r)), xe = min(sw - w, Int(cx + r) + 1)
        let ys = max(0, Int(cy - r)), ye = min(sh - h, Int(cy + r) + 1)
        guard xs < xe, ys < ye else { return 0 }
        let sub = image.resizedArea(to: sw, sh, region: (xs, ys, xe - xs + w - 1, ye - ys + h - 1))
        return Double(compiled.bestDepth(sub, step: 1, xCount: xe - xs, yCount: ye - ys)) / Double(cascade.stages.count)
    }
}

/// OpenCV's `groupRectangles`: partition into classes of similar rectangles, average each class,
/// drop classes with `groupThreshold` or fewer members, and drop small boxes inside bigger,
/// better-supported ones.
package func groupRectangles(_ rects: [FaceBox], groupThreshold: Int, eps: Double) -> [FaceDetection] {
    if rects.isEmpty { return [] }
    if groupThreshold <= 0 { return rects.map { FaceDetection(box: $0, neighbors: 1) } }
    // Union-find over the "similar" relation (transitive closure, as cv::partition).
    var parent = Array(rects.indices)
    func find(_ i: Int) -> Int {
        var i = i
        while parent[i] != i {
            parent[i] = parent[parent[i]]
            i = parent[i]
        }
        return i
    }
    func similar(_ a: FaceBox, _ b: FaceBox) -> Bool {
        let delta = eps * (min(a.width, b.width) + min(a.height, b.height)) * 0.5
        return abs(a.x - b.x) <= delta && abs(a.y - b.y) <= delta
            && abs(a.maxX - b.maxX) <= delta && abs(a.maxY - b.maxY) <= delta
    }
    for i in rects.indices {
        for j in (i + 1)..<rects.count where similar(rects[i], rects[j]) {
            let a = find(i), b = find(j)
            if a != b { parent[a] = b }
        }
    }
    var sums: [Int: (FaceBox, Int)] = [:]
    var order: [Int] = []
    for i in rects.indices {
        let c = find(i)
        if var s = sums[c] {
            s.0 = FaceBox(x: s.0.x + rects[i].x, y: s.0.y + rects[i].y, width: s.0.width + rects[i].width, height: s.0.height + rects[i].height)
            s.1 += 1
            sums[c] = s
        } else {
            sums[c] = (rects[i], 1)
            order.append(c)
        }
    }
    let classes: [(FaceBox, Int)] = order.map { c in
        let (s, n) = sums[c]!
        let k = 1 / Double(n)
        // OpenCV rounds the averaged rectangle to integers.
        return (FaceBox(x: (s.x * k).rounded(), y: (s.y * k).rounded(), width: (s.width * k).rounded(), height: (s.height * k).rounded()), n)
    }
    var out: [FaceDetection] = []
    for (i, (r1, n1)) in classes.enumerated() where n1 > groupThreshold {
        var inside = false
        for (j, (r2, n2)) in classes.enumerated() where j != i && n2 > groupThreshold {
            let dx = (r2.width * eps).rounded(), dy = (r2.height * eps).rounded()
            if r1.x >= r2.x - dx && r1.y >= r2.y - dy && r1.maxX <= r2.maxX + dx && r1.maxY <= r2.maxY + dy
                && (n2 > max(3, n1) || n1 < 3) {
                inside = true
                break
            }
        }
        if !inside { out.append(FaceDetection(box: r1, neighbors: n1)) }
    }
    return out
}
