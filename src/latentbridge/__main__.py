from latentbridge.cli import main

main()
