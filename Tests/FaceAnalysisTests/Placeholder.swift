import Testing

@Suite struct PlaceholderFaceAnalysisTests { @Test func builds() {} }
