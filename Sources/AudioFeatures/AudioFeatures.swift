// AudioFeatures module: see Package.swift
