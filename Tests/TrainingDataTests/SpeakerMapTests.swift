import DubfarmCore
import Testing
@testable import TrainingData

@Suite("Dataset speakers file")
struct SpeakerMapTests {
    @Test("TSV: comments and blank lines ignored; unlisted clips are their own speaker")
    func parses() throws {
        let map = try SpeakerMap.parse("# stem\tspeaker\n\ngrid_a\tgrid\ngrid_b\tgrid \nclip_c\tspeaker-c\n", name: "s.tsv")
        #expect(map.speaker(of: "grid_a") == "grid")
        #expect(map.speaker(of: "grid_b") == "grid")
        #expect(map.speaker(of: "clip_c") == "speaker-c")
        #expect(map.speaker(of: "other") == "other")
    }

    @Test("a malformed line is named by file and line number")
    func malformed() throws {
        #expect { try SpeakerMap.parse("a\tb\nno-tab-here\n", name: "s.tsv") } throws: {
            ($0 as? DubfarmError)?.message.hasPrefix("s.tsv:2:") == true
        }
        #expect { try SpeakerMap.parse("a\tb\na\tc\n", name: "s.tsv") } throws: {
            ($0 as? DubfarmError)?.message.contains("two speakers") == true
        }
    }
}
