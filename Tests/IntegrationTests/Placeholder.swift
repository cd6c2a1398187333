import Testing

@Suite struct PlaceholderIntegrationTests { @Test func builds() {} }
