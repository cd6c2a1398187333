import DubfarmCore
import FarmProtocol
import Testing

@Suite("Job names and labels")
struct JobLabelsTests {
    @Test("KEY=VALUE items, several per item with commas, make one set")
    func parse() throws {
        #expect(try JobLabels.parse(["lang=es", "show=pilot,season=2"]) == ["lang": "es", "show": "pilot", "season": "2"])
        #expect(try JobLabels.parse(["studio.example/tier=a b"]) == ["studio.example/tier": "a b"])
        #expect(try JobLabels.parse(["lang=es", "lang=es"]) == ["lang": "es"])
    }

    @Test("bad keys, values and conflicts are refused with the reason", arguments: [
        (["lang"], "not KEY=VALUE"), (["Lang=es"], "label key 'Lang'"), (["-x=1"], "label key '-x'"), (["lang="], "the value must be"),
        (["lang=es", "lang=de"], "given twice"),
    ])
    func refused(items: [String], message: String) {
        #expect(throws: DubfarmError.self) { try JobLabels.parse(items) }
        do { _ = try JobLabels.parse(items) } catch let e as DubfarmError { #expect(e.message.contains(message), "\(e.message)") } catch {}
    }

    @Test("a label set as the coordinator receives it is checked key by key")
    func check() throws {
        try JobLabels.check(["lang": "es"])
        #expect(throws: DubfarmError.self) { try JobLabels.check(["a=b": "c"]) }
        #expect(throws: DubfarmError.self) { try JobLabels.check(["k": "x,y"]) }
        #expect(throws: DubfarmError.self) { try JobLabels.check(Dictionary(uniqueKeysWithValues: (0...JobLabels.maxCount).map { ("k\($0)", "v") })) }
        #expect(throws: DubfarmError.self) { try JobLabels.checkName("a,b") }
    }

    @Test("a selector matches jobs that have every one of its pairs")
    func matches() {
        #expect(JobLabels.matches(["lang": "es", "show": "a"], ["show": "a"]))
        #expect(!JobLabels.matches(["lang": "es"], ["show": "a"]))
        #expect(JobLabels.format(["show": "a", "lang": "es"]) == "lang=es,show=a")
    }
}
