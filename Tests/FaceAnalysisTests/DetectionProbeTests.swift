import DubfarmCore
import FaceAnalysis
import Foundation
import Testing

@Suite struct DetectionProbe {
    @Test func probe() throws {
        let det = try FaceDetector()
        let frames = try TestMedia.frames(TestMedia.path("speaker-b.mp4"))
        print("frames", frames.count)
        var t0 = Date()
        var a: [FaceDetector.AnalysisImage] = []
        for f in frames.prefix(20) { a.append(det.prepare(f)) }
        print("prepare ms", Date().timeIntervalSince(t0) * 50)
        t0 = Date()
        var b: FaceBox?
        for x in a { b = det.detect(inAnalysis: x).first?.box }
        print("full ms", Date().timeIntervalSince(t0) * 50)
        t0 = Date()
        for x in a { _ = det.detect(inAnalysis: x, near: b) }
        print("roi ms", Date().timeIntervalSince(t0) * 50)
        t0 = Date()
        for _ in 0..<20 { _ = GrayImage(luma: frames[0]) }
        print("luma ms", Date().timeIntervalSince(t0) * 50)
        let sp = try ShapePredictor(contentsOf: ShapePredictor.defaultPath)
        print("load sp s", Date().timeIntervalSince(t0))
        t0 = Date()
        var lm: [Point2] = []
        for f in frames.prefix(20) { lm = sp.landmarks(in: f, box: b!) }
        print("landmarks ms", Date().timeIntervalSince(t0) * 50, b!, lm.map { "(\(Int($0.x)),\(Int($0.y)))" }.joined(separator: " "))
    }
}
