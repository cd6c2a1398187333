import DubfarmCore
import Testing

@Suite("Stage catalog")
struct StageCatalogTests {
    @Test("only the dub stage reads the dub track and the source face")
    func inputsPerStage() {
        #expect(StageCatalog.stage("dub")?.usesAudio == true)
        #expect(StageCatalog.stage("dub")?.usesFace == true)
        for name in ["passthrough", "sleep", "sleep-copy", "fail"] {
            let stage = StageCatalog.stage(name)
            #expect(stage != nil, "\(name)")
            #expect(stage?.usesAudio == false && stage?.usesFace == false, "\(name)")
        }
        #expect(StageCatalog.stage("Dub") == nil)
        #expect(StageCatalog.stage("") == nil)
        #expect(Set(StageCatalog.all.map(\.name)).count == StageCatalog.all.count)
    }

    @Test("the error text names every stage, product stages first")
    func namesInWords() {
        #expect(StageCatalog.namesInWords == "dub or passthrough; sleep, sleep-copy and fail for tests and benchmarks")
    }
}
