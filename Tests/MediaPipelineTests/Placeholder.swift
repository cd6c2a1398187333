import Testing

@Suite struct PlaceholderMediaPipelineTests { @Test func builds() {} }
