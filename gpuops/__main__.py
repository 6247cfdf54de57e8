from gpuops.cli.entry import main

main()
