import DubfarmCore
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A boosted Haar-feature cascade in OpenCV's "new" XML format (`opencv-cascade-classifier`,
/// as written by `opencv_traincascade`), e.g. `haarcascade_frontalface_default.xml`.
///
/// Only upright features are supported; a cascade with tilted features is rejected as
/// unsupported when loaded (the frontal-face cascades shipped in `opencv-data` have none).
package struct HaarCascade: Sendable {
    /// One rectangle of a Haar feature, in window coordinates.
    package struct Rect: Sendable, Hashable {
        package var x, y, width, height: Int
        package var weight: Float
    }

    /// A Haar feature: the weighted sum of up to three rectangles' pixel sums.
    package struct Feature: Sendable, Hashable {
        package var rects: [Rect]
    }

    /// One node of a weak classifier's tree. A child index `> 0` names another node of the same
    /// tree; `<= 0` names the leaf `-child`.
    package struct Node: Sendable, Hashable {
        package var left: Int
        package var right: Int
        package var featureIndex: Int
        package var threshold: Float
    }

    /// A weak classifier: a small tree whose leaves vote.
    package struct WeakClassifier: Sendable, Hashable {
        package var nodes: [Node]
        package var leaves: [Float]
    }

    /// A stage: the sum of its weak classifiers' votes must reach `threshold`.
    package struct Stage: Sendable, Hashable {
        package var threshold: Float
        package var classifiers: [WeakClassifier]
    }

    /// Detection window size the cascade was trained on (24×24 for the frontal-face cascades).
    package var windowWidth: Int
    package var windowHeight: Int
    package var stages: [Stage]
    package var features: [Feature]

    /// The default location of the Debian `opencv-data` frontal-face cascade.
    package static let defaultPath = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"

    package init(windowWidth: Int, windowHeight: Int, stages: [Stage], features: [Feature]) {
        self.windowWidth = windowWidth
        self.windowHeight = windowHeight
        self.stages = stages
        self.features = features
    }

    /// Loads a cascade file; throws a ``DubfarmError`` naming the file and the reason.
    package init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DubfarmError(.notFound, "Cannot read the face cascade \(path): the file is missing or unreadable.")
        }
        try self.init(xml: data, name: path)
    }

    /// Parses a cascade from its XML text; `name` is used in error messages.
    package init(xml: Data, name: String = "cascade") throws {
        let builder = XMLTreeBuilder()
        let parser = XMLParser(data: xml)
        parser.delegate = builder
        guard parser.parse(), let root = builder.root else {
            let why = parser.parserError.map { "\($0)" } ?? "no root element"
            throw DubfarmError(.badInput, "The face cascade \(name) is not valid XML: \(why).")
        }
        func bad(_ why: String) -> DubfarmError {
            DubfarmError(.badInput, "The face cascade \(name) is not an OpenCV cascade: \(why).")
        }
        guard let cascade = root.name == "cascade" ? root : root.child("cascade") else {
            throw bad("no <cascade> element (old-format cascades are not supported)")
        }
        let stageType = cascade.child("stageType")?.trimmed ?? ""
        let featureType = cascade.child("featureType")?.trimmed ?? ""
        guard stageType == "BOOST" else { throw bad("stage type '\(stageType)' is not BOOST") }
        guard featureType == "HAAR" else {
            throw DubfarmError(.unsupported, "The face cascade \(name) uses \(featureType) features; only HAAR is supported.")
        }
        guard let w = cascade.child("width").flatMap({ Int($0.trimmed) }),
              let h = cascade.child("height").flatMap({ Int($0.trimmed) }), w > 2, h > 2 else {
            throw bad("missing or invalid window size")
        }
        var features: [Feature] = []
        for f in cascade.child("features")?.children ?? [] {
            if let t = f.child("tilted"), Int(t.trimmed) != 0 {
                throw DubfarmError(.unsupported, "The face cascade \(name) has tilted Haar features, which are not supported.")
            }
            var rects: [Rect] = []
            for r in f.child("rects")?.children ?? [] {
                let v = r.trimmed.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" })
                guard v.count == 5, let x = Int(v[0]), let y = Int(v[1]), let rw = Int(v[2]), let rh = Int(v[3]),
                      let wt = Float(v[4]), x >= 0, y >= 0, rw > 0, rh > 0, x + rw <= w, y + rh <= h else {
                    throw bad("feature \(features.count) has an invalid rectangle '\(r.trimmed)'")
                }
                rects.append(Rect(x: x, y: y, width: rw, height: rh, weight: wt))
            }
            guard (1...3).contains(rects.count) else { throw bad("feature \(features.count) has \(rects.count) rectangles") }
            features.append(Feature(rects: rects))
        }
        var stages: [Stage] = []
        for s in cascade.child("stages")?.children ?? [] {
            guard let thr = s.child("stageThreshold").flatMap({ Float($0.trimmed) }) else {
                throw bad("stage \(stages.count) has no threshold")
            }
            var classifiers: [WeakClassifier] = []
            for wc in s.child("weakClassifiers")?.children ?? [] {
                let inner = (wc.child("internalNodes")?.trimmed ?? "").split(whereSeparator: \.isWhitespace)
                let leaves = (wc.child("leafValues")?.trimmed ?? "").split(whereSeparator: \.isWhitespace).compactMap { Float($0) }
                guard !inner.isEmpty, inner.count % 4 == 0 else { throw bad("stage \(stages.count) has malformed internalNodes") }
                var nodes: [Node] = []
                for i in stride(from: 0, to: inner.count, by: 4) {
                    guard let l = Int(inner[i]), let r = Int(inner[i + 1]), let fi = Int(inner[i + 2]),
                          let t = Float(inner[i + 3]), fi >= 0, fi < features.count,
                          l < inner.count / 4, r < inner.count / 4, -l < leaves.count, -r < leaves.count else {
                        throw bad("stage \(stages.count) has an invalid node")
                    }
                    nodes.append(Node(left: l, right: r, featureIndex: fi, threshold: t))
                }
                classifiers.append(WeakClassifier(nodes: nodes, leaves: leaves))
            }
            guard !classifiers.isEmpty else { throw bad("stage \(stages.count) has no weak classifiers") }
            stages.append(Stage(threshold: thr, classifiers: classifiers))
        }
        guard !stages.isEmpty, !features.isEmpty else { throw bad("no stages or no features") }
        self.init(windowWidth: w, windowHeight: h, stages: stages, features: features)
    }
}

/// Builds a minimal element tree from XMLParser events (the cascade files are ~1 MB).
final class XMLTreeBuilder: NSObject, XMLParserDelegate {
    final class Element {
        let name: String
        var text = ""
        var children: [Element] = []
        init(name: String) { self.name = name }
        func child(_ name: String) -> Element? { children.first { $0.name == name } }
        var trimmed: String { text.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    private var stack: [Element] = []
    private(set) var root: Element?

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
        let e = Element(name: elementName)
        if let parent = stack.last { parent.children.append(e) } else if root == nil { root = e }
        stack.append(e)
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        _ = stack.popLast()
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        stack.last?.text += string
    }
}
