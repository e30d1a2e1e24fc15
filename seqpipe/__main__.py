from seqpipe.cli import main

main()
