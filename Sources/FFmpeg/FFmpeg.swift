// FFmpeg module: see Package.swift
