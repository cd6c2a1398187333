// VQModel module: see Package.swift
