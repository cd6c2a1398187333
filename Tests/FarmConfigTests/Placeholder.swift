import Testing

@Suite struct PlaceholderFarmConfigTests { @Test func builds() {} }
