// FaceAnalysis module: see Package.swift
