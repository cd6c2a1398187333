// MediaPipeline module: see Package.swift
